//! Access rights (SDM §4.6, sheet §7.6; KVM `update_permission_bitmask`, `update_pkru_bitmask`).

/// Register inputs of the permission check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermInputs {
    /// CR0.WP.
    pub wp: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// EFER.NXE: XD is honoured only with NXE=1 (and never in 32-bit paging).
    pub nx: bool,
}

/// Kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Fetch];
}

/// Who accesses: CPL, whether the access is an implicit supervisor one (GDT/LDT/IDT/TSS),
/// and RFLAGS.AC (for SMAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccessRequest {
    pub access: Access,
    pub cpl: u8,
    pub implicit_supervisor: bool,
    pub rflags_ac: bool,
}

impl AccessRequest {
    /// An explicit CPL0 access with AC=0.
    pub fn supervisor(access: Access) -> AccessRequest {
        AccessRequest {
            access,
            cpl: 0,
            implicit_supervisor: false,
            rflags_ac: false,
        }
    }
    /// A CPL3 access.
    pub fn user(access: Access) -> AccessRequest {
        AccessRequest {
            access,
            cpl: 3,
            implicit_supervisor: false,
            rflags_ac: false,
        }
    }
    /// User-mode access: CPL=3 and not an implicit supervisor access.
    pub fn is_user(&self) -> bool {
        self.cpl >= 3 && !self.implicit_supervisor
    }
}

/// Rights of a translation, combined over every level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EffectiveRights {
    /// U/S=1 at every level.
    pub user: bool,
    /// R/W=1 at every level.
    pub writable: bool,
    /// XD=1 at some level (only counted when NXE=1 in PAE/IA-32e paging).
    pub nx: bool,
}

/// Does the access violate the U/S, R/W, NX, SMEP or SMAP rules?
pub fn permission_fault(p: &PermInputs, r: &EffectiveRights, req: &AccessRequest) -> bool {
    let user_access = req.is_user();
    match req.access {
        Access::Fetch => {
            if p.nx && r.nx {
                return true;
            }
            if user_access {
                !r.user
            } else {
                // SMEP: supervisor fetch from a user address faults regardless of WP.
                p.smep && r.user
            }
        }
        Access::Read | Access::Write => {
            let write = req.access == Access::Write;
            if user_access {
                !r.user || (write && !r.writable)
            } else {
                // SMAP: implicit supervisor accesses are always checked; explicit ones are
                // exempt only at CPL<3 with AC=1.
                let smap_override = req.cpl < 3 && req.rflags_ac && !req.implicit_supervisor;
                if p.smap && r.user && !smap_override {
                    return true;
                }
                write && p.wp && !r.writable
            }
        }
    }
}

/// Protection-key check (CR4.PKE in IA-32e mode): `key` from bits 62:59 of the leaf entry.
/// Applies to data accesses to user addresses only; AD blocks every data access, WD blocks
/// user writes and, with CR0.WP=1, supervisor writes.
pub fn pkey_fault(pkru: u32, key: u8, wp: bool, r: &EffectiveRights, req: &AccessRequest) -> bool {
    if req.access == Access::Fetch || !r.user {
        return false;
    }
    let shift = 2 * u32::from(key & 0xf);
    let ad = (pkru >> shift) & 1 != 0;
    let wd = (pkru >> (shift + 1)) & 1 != 0;
    ad || (req.access == Access::Write && wd && (req.is_user() || wp))
}
