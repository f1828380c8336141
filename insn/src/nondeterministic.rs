//! Instructions whose results the machine state does not determine: the time-stamp counter,
//! the random-number generator, the processor ID, CPUID, performance counters and MSRs, and
//! `in` from a port the platform answers inside the backend. A re-execution (`mmurr verify`)
//! must be given the recorded results of these, at the same retired instruction, or it
//! diverges at the first `rdtsc`.

use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic, OpAccess, Register, RflagsBits};

/// What a nondeterministic instruction writes: general registers (bit `n` = `Regs::gpr[n]`)
/// and RFLAGS bits (architectural positions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    pub gprs: u16,
    pub rflags: u64,
}

impl Outputs {
    /// Indices into `Regs::gpr` of the registers written, ascending.
    pub fn gpr_indices(self) -> impl Iterator<Item = usize> {
        (0..16).filter(move |n| self.gprs >> n & 1 != 0)
    }
}

/// The outputs of `i` if its results come from outside the architectural state, `None` for
/// every other instruction. RDMSR is here because most MSRs read engine- and host-specific
/// values (IA32_TSC, APERF/MPERF, the APIC base); CPUID because KVM fills dynamic fields (APIC
/// IDs, OSXSAVE) into the table the trace carries. `in` is here for the ports the platform
/// answers without an exit (KVM's in-kernel PIT and PICs, port 0x61 whose refresh and timer
/// bits follow the host's clock; mmurr-emu's platform): a read that reached one of the
/// recorder's devices is recorded as a port read instead, so a consumer takes `in` as a result
/// only for a step with no port-read event (see [`is_port_read`]).
pub fn nondeterministic(i: &Instruction) -> Option<Outputs> {
    use Mnemonic as M;
    if !matches!(
        i.mnemonic(),
        M::Rdtsc
            | M::Rdtscp
            | M::Rdrand
            | M::Rdseed
            | M::Rdpid
            | M::Rdpmc
            | M::Rdmsr
            | M::Cpuid
            | M::In
    ) {
        return None;
    }
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(i);
    let mut gprs = 0u16;
    for r in info.used_registers() {
        let writes = matches!(
            r.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        if !writes || !r.register().is_gpr() {
            continue;
        }
        if let Some(n) = r
            .register()
            .full_register()
            .number()
            .checked_sub(Register::RAX.number())
            .filter(|&n| n < 16)
        {
            gprs |= 1 << n;
        }
    }
    Some(Outputs {
        gprs,
        rflags: architectural_flags(i.rflags_modified()),
    })
}

/// `in` to a register: its value is a port read's, recorded as an I/O event when it reached one
/// of the recorder's devices, else as the instruction's result.
pub fn is_port_read(i: &Instruction) -> bool {
    i.mnemonic() == Mnemonic::In
}

/// iced-x86's `RflagsBits` at their RFLAGS positions (the arithmetic flags; the others are
/// never written by the instructions above).
fn architectural_flags(bits: u32) -> u64 {
    const MAP: [(u32, u64); 6] = [
        (RflagsBits::CF, 1 << 0),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::OF, 1 << 11),
    ];
    MAP.iter()
        .filter(|(iced, _)| bits & iced != 0)
        .fold(0, |acc, (_, arch)| acc | arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(bytes: &[u8]) -> Option<Outputs> {
        nondeterministic(&crate::decode(bytes, 64, 0x1000).unwrap())
    }

    #[test]
    fn names_the_registers_each_one_writes() {
        const RAX: u16 = 1;
        const RCX: u16 = 1 << 1;
        const RDX: u16 = 1 << 2;
        const RBX: u16 = 1 << 3;
        // rdtsc
        assert_eq!(
            outputs(&[0x0f, 0x31]),
            Some(Outputs {
                gprs: RAX | RDX,
                rflags: 0
            })
        );
        // rdtscp
        assert_eq!(outputs(&[0x0f, 0x01, 0xf9]).unwrap().gprs, RAX | RCX | RDX);
        // cpuid
        assert_eq!(outputs(&[0x0f, 0xa2]).unwrap().gprs, RAX | RBX | RCX | RDX);
        // rdrand r9: the register and CF (the other arithmetic flags are cleared)
        let r = outputs(&[0x49, 0x0f, 0xc7, 0xf1]).unwrap();
        assert_eq!(r.gprs, 1 << 9);
        assert_eq!(r.rflags & 1, 1);
        assert_eq!(
            r.gpr_indices().collect::<Vec<_>>(),
            [9],
            "rdrand r9 writes r9 only"
        );
        // rdseed eax
        assert_eq!(outputs(&[0x0f, 0xc7, 0xf8]).unwrap().gprs, RAX);
        // rdpid rax
        assert_eq!(outputs(&[0xf3, 0x0f, 0xc7, 0xf8]).unwrap().gprs, RAX);
        // rdmsr, rdpmc
        assert_eq!(outputs(&[0x0f, 0x32]).unwrap().gprs, RAX | RDX);
        assert_eq!(outputs(&[0x0f, 0x33]).unwrap().gprs, RAX | RDX);
        // in al, 0x61 (the platform's port: KVM answers it without an exit)
        let i = crate::decode(&[0xe4, 0x61], 64, 0x1000).unwrap();
        assert!(is_port_read(&i));
        assert_eq!(nondeterministic(&i).unwrap().gprs, RAX);
        // out 0x80, al is no input
        assert_eq!(outputs(&[0xe6, 0x80]), None);
    }

    #[test]
    fn ordinary_instructions_are_deterministic() {
        assert_eq!(outputs(&[0x48, 0x89, 0xc3]), None); // mov rbx, rax
        assert_eq!(outputs(&[0x0f, 0x01, 0xd0]), None); // xgetbv
    }
}
