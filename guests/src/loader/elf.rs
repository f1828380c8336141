//! A small ELF reader: just what loading an executable needs (the file header and the program
//! headers) for 32-bit and 64-bit little-endian x86 files. Every field read is bounds-checked;
//! malformed files give an [`ElfError`], never a panic.

/// Program header type of a loadable segment.
pub const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// Program headers accepted at most (real kernels have a handful).
pub const MAX_PROGRAM_HEADERS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("file is {len} bytes, too short for an ELF header")]
    TooShort { len: usize },
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("ELF class {0} is neither 1 (32-bit) nor 2 (64-bit)")]
    BadClass(u8),
    #[error("ELF data encoding {0} is not 1 (little-endian)")]
    NotLittleEndian(u8),
    #[error("ELF version {0} is not 1")]
    BadVersion(u32),
    #[error("ELF type {0} is not ET_EXEC (2): only executables can be loaded")]
    NotExecutable(u16),
    #[error("ELF machine {machine} is not x86 for a {bits}-bit file (EM_386 = 3, EM_X86_64 = 62)")]
    BadMachine { machine: u16, bits: u32 },
    #[error("program header table: {0}")]
    ProgramHeaders(String),
    #[error("program header {index}: {what}")]
    Segment { index: usize, what: String },
}

/// One program header, widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl ProgramHeader {
    /// The segment's bytes in the file (checked against the file by [`parse`]).
    pub fn file_bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let len = usize::try_from(self.filesz).unwrap_or(usize::MAX);
        start
            .checked_add(len)
            .and_then(|end| file.get(start..end))
            .unwrap_or(&[])
    }
}

/// A parsed ELF executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf {
    pub is64: bool,
    pub machine: u16,
    pub entry: u64,
    pub program_headers: Vec<ProgramHeader>,
}

impl Elf {
    /// The PT_LOAD segments that occupy memory (memsz > 0).
    pub fn load_segments(&self) -> impl Iterator<Item = &ProgramHeader> {
        self.program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.memsz > 0)
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Parses the ELF header and program headers of `b`, checking every program header's file
/// range against the file and its memory range against address-space overflow.
pub fn parse(b: &[u8]) -> Result<Elf, ElfError> {
    let too_short = ElfError::TooShort { len: b.len() };
    if b.len() < 16 {
        return Err(too_short);
    }
    if b[0..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(ElfError::BadMagic);
    }
    let is64 = match b[4] {
        1 => false,
        2 => true,
        c => return Err(ElfError::BadClass(c)),
    };
    if b[5] != 1 {
        return Err(ElfError::NotLittleEndian(b[5]));
    }
    if b[6] != 1 {
        return Err(ElfError::BadVersion(b[6] as u32));
    }
    let header_len = if is64 { 64 } else { 52 };
    if b.len() < header_len {
        return Err(too_short);
    }
    // Offsets of the header fields (ELF32 / ELF64).
    let (o_entry, o_phoff, o_phentsize, o_phnum) = if is64 {
        (24, 32, 54, 56)
    } else {
        (24, 28, 42, 44)
    };
    let rd16 = |off| u16_at(b, off).ok_or(ElfError::TooShort { len: b.len() });
    let rd32 = |off| u32_at(b, off).ok_or(ElfError::TooShort { len: b.len() });
    let rd64 = |off| u64_at(b, off).ok_or(ElfError::TooShort { len: b.len() });
    let e_type = rd16(16)?;
    let machine = rd16(18)?;
    let version = rd32(20)?;
    if version != 1 {
        return Err(ElfError::BadVersion(version));
    }
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable(e_type));
    }
    let want = if is64 { EM_X86_64 } else { EM_386 };
    if machine != want {
        return Err(ElfError::BadMachine {
            machine,
            bits: if is64 { 64 } else { 32 },
        });
    }
    let entry = if is64 {
        rd64(o_entry)?
    } else {
        rd32(o_entry)? as u64
    };
    let phoff = if is64 {
        rd64(o_phoff)?
    } else {
        rd32(o_phoff)? as u64
    };
    let phentsize = rd16(o_phentsize)? as usize;
    let phnum = rd16(o_phnum)? as usize;
    let min_ent = if is64 { 56 } else { 32 };
    if phnum == 0 {
        return Err(ElfError::ProgramHeaders("no program headers".into()));
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::ProgramHeaders(format!(
            "{phnum} entries, at most {MAX_PROGRAM_HEADERS} accepted"
        )));
    }
    if phentsize < min_ent {
        return Err(ElfError::ProgramHeaders(format!(
            "entry size {phentsize} is smaller than {min_ent}"
        )));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|o| phentsize.checked_mul(phnum).and_then(|n| o.checked_add(n)));
    let phoff = match table_end {
        Some(end) if end <= b.len() => phoff as usize,
        _ => {
            return Err(ElfError::ProgramHeaders(format!(
                "{phnum} entries of {phentsize} bytes at offset {phoff:#x} run past the end of \
                 the {}-byte file",
                b.len()
            )))
        }
    };
    let mut program_headers = Vec::with_capacity(phnum);
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let seg_err = |what: String| ElfError::Segment { index, what };
        let ph = if is64 {
            ProgramHeader {
                p_type: rd32(at)?,
                flags: rd32(at + 4)?,
                offset: rd64(at + 8)?,
                vaddr: rd64(at + 16)?,
                paddr: rd64(at + 24)?,
                filesz: rd64(at + 32)?,
                memsz: rd64(at + 40)?,
            }
        } else {
            ProgramHeader {
                p_type: rd32(at)?,
                offset: rd32(at + 4)? as u64,
                vaddr: rd32(at + 8)? as u64,
                paddr: rd32(at + 12)? as u64,
                filesz: rd32(at + 16)? as u64,
                memsz: rd32(at + 20)? as u64,
                flags: rd32(at + 24)?,
            }
        };
        if ph.p_type == PT_LOAD {
            if ph.filesz > ph.memsz {
                return Err(seg_err(format!(
                    "file size {:#x} exceeds memory size {:#x}",
                    ph.filesz, ph.memsz
                )));
            }
            let in_file = ph
                .offset
                .checked_add(ph.filesz)
                .is_some_and(|e| e <= b.len() as u64);
            if !in_file {
                return Err(seg_err(format!(
                    "file range [{:#x}, +{:#x}) runs past the end of the {}-byte file",
                    ph.offset,
                    ph.filesz,
                    b.len()
                )));
            }
            if ph.paddr.checked_add(ph.memsz).is_none() || ph.vaddr.checked_add(ph.memsz).is_none()
            {
                return Err(seg_err(format!(
                    "memory size {:#x} wraps the address space",
                    ph.memsz
                )));
            }
        }
        program_headers.push(ph);
    }
    Ok(Elf {
        is64,
        machine,
        entry,
        program_headers,
    })
}
