//! x86-64 4/5-level page walks (VT-d first-level, VT-d 3.6 and 9.7) and the
//! VT-d second-level format (VT-d 3.7 and 9.8).
//!
//! Both formats are radix trees of 512 8-byte entries per 4 KiB table,
//! indexed by 9 bits of the input address per level; level 1 holds 4 KiB
//! leaves, level 2 may hold 2 MiB leaves and level 3 1 GiB leaves (PS bit).
//! Levels are numbered as the spec does: 1 is the PTE level, `levels` (3, 4
//! or 5) the root.
//!
//! The walkers are architecture-pure: no caches, no fault records. They
//! read guest memory through [`GuestRam`], never trust an entry, and return
//! either a [`WalkOutput`] or a [`WalkError`] whose `kind` is:
//!
//! - [`FaultKind::NotPresent`]: P=0 (first level) or R=W=0 (and X=0 when
//!   execute is enabled) (second level);
//! - [`FaultKind::ReservedBits`]: a reserved bit of a present entry is set;
//! - [`FaultKind::Permission`]: the leaf denies the request; the `_classified`
//!   variants also say which right ([`Denial`]);
//! - [`FaultKind::AddressSize`]: the input address is outside what the
//!   table can translate (non-canonical for first level, beyond the AGAW for
//!   second level);
//! - [`FaultKind::WalkAbort`]: a table read or an A/D update could not be
//!   made (address outside guest RAM, or the entry kept changing).
//!
//! Accessed/dirty updates (VT-d 3.6.2 for first level, 3.7.2 for second
//! level when SLADE is set) use [`GuestRam::compare_exchange_u64`], are made
//! only once the request is known to be allowed, and never change any other
//! bit: if the entry changed between the read and the update, the walk is
//! restarted (at most [`MAX_RESTARTS`] times).

use super::WalkError;
use crate::mem::GuestRam;
use crate::types::{FaultKind, Gpa, PageSize, Perm};

/// Bits 51:12 of an entry: the address of the next table or of the page.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How many times a walk restarts because an entry changed under an A/D
/// update before giving up with [`FaultKind::WalkAbort`].
pub const MAX_RESTARTS: u8 = 4;

/// First-level entry bits (VT-d 9.7, the IA-32e paging format).
pub mod fl {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Read/write: writes allowed when set.
    pub const RW: u64 = 1 << 1;
    /// User/supervisor: user-mode (non-privileged) access allowed when set.
    pub const US: u64 = 1 << 2;
    /// Page-level write-through (ignored by this model).
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable (ignored by this model).
    pub const PCD: u64 = 1 << 4;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty (leaf entries only).
    pub const D: u64 = 1 << 6;
    /// Page size: the entry maps a 2 MiB (level 2) or 1 GiB (level 3) page.
    pub const PS: u64 = 1 << 7;
    /// Global (leaf only; ignored by VT-d).
    pub const G: u64 = 1 << 8;
    /// PAT bit of a large-page entry.
    pub const PAT_LARGE: u64 = 1 << 12;
    /// Execute disable.
    pub const XD: u64 = 1 << 63;
}

/// Second-level entry bits (VT-d 9.8).
pub mod sl {
    /// Read.
    pub const R: u64 = 1 << 0;
    /// Write.
    pub const W: u64 = 1 << 1;
    /// Execute (honoured only when execute requests are enabled, SLEE).
    pub const X: u64 = 1 << 2;
    /// Extended memory type, bits 5:3 (leaf; ignored by this model).
    pub const EMT_MASK: u64 = 0b111 << 3;
    /// Ignore PAT (leaf; ignored by this model).
    pub const IPAT: u64 = 1 << 6;
    /// Page size.
    pub const PS: u64 = 1 << 7;
    /// Accessed (when A/D updates are enabled).
    pub const A: u64 = 1 << 8;
    /// Dirty (leaf, when A/D updates are enabled).
    pub const D: u64 = 1 << 9;
    /// Snoop (leaf; ignored by this model, which is always coherent).
    pub const SNP: u64 = 1 << 11;
    /// Transient mapping (legacy; ignored).
    pub const TM: u64 = 1 << 62;
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkOutput {
    /// Output address for the input address (page base plus offset).
    pub output: u64,
    /// Size of the page the leaf maps.
    pub page_size: PageSize,
    /// Rights the mapping grants to this kind of request (first level: for
    /// the request's privilege level).
    pub perm: Perm,
    /// First level: the page is user-accessible (U/S=1 at every level).
    /// Second level: always true.
    pub user: bool,
    /// Table entries read from guest memory.
    pub reads: u8,
    /// A/D updates written (compare-and-exchange operations that succeeded).
    pub ad_updates: u8,
    /// For each non-leaf entry this walk read, indexed by its level: where a
    /// later walk of the same address range can resume (the next table and
    /// the rights accumulated down to that entry). This is what a
    /// paging-structure cache holds (VT-d 6.2.5). Index 0 and 1 are never set.
    pub nonleaf: [Option<WalkStart>; 6],
}

/// Where a walk starts: the root table, or a lower table found in a
/// paging-structure cache (VT-d 6.2.5) together with the rights the
/// entries above it grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkStart {
    /// Address of the table read at `level`.
    pub table: u64,
    /// Level of that table (1..=5).
    pub level: u8,
    /// Rights accumulated above: first level, entry bits R/W and U/S set
    /// when every upper entry had them and XD set when any had it; second
    /// level, the AND of the upper entries' R/W/X bits.
    pub rights: u64,
}

impl WalkStart {
    /// Start at the root table of a first-level table.
    pub const fn first_level_root(root: u64, levels: u8) -> Self {
        WalkStart {
            table: root & ADDR_MASK,
            level: levels,
            rights: fl::RW | fl::US,
        }
    }

    /// Start at the root table of a second-level table.
    pub const fn second_level_root(root: u64, levels: u8) -> Self {
        WalkStart {
            table: root & ADDR_MASK,
            level: levels,
            rights: sl::R | sl::W | sl::X,
        }
    }
}

impl WalkOutput {
    /// Base of the output page.
    pub const fn page_base(&self) -> u64 {
        self.page_size.align_down(self.output)
    }
}

/// Which right a leaf denied (the detail of a [`FaultKind::Permission`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Denial {
    /// A non-privileged request met a supervisor-only page (first level,
    /// U/S=0 somewhere on the path).
    User,
    /// Read not allowed (second level R=0).
    Read,
    /// Write not allowed.
    Write,
    /// Execute not allowed (XD, SMEP, or second-level X=0 with SLEE).
    Execute,
}

/// Inputs of a first-level walk that come from the PASID entry and the
/// request (VT-d 3.6.1, 9.6: SRE, WPE, NXE, SMEP; CAP.FL1GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlOptions {
    /// The request is privileged (supervisor): PASID prefix PR=1, allowed
    /// by SRE. The caller checks SRE before walking.
    pub privileged: bool,
    /// Write-protect enable: supervisor writes honour R/W (like CR0.WP).
    pub wpe: bool,
    /// No-execute enable: XD denies instruction fetches. With `nxe` false,
    /// XD is ignored (earlier specs made it reserved; Linux kernels set XD
    /// with and without NXE, and rev 4 removed NXE, so it is never reserved
    /// here).
    pub nxe: bool,
    /// Supervisor-mode execute prevention: supervisor fetches from user
    /// pages are denied.
    pub smep: bool,
    /// 1 GiB pages supported (CAP.FL1GP); PS at level 3 is reserved otherwise.
    pub allow_1g: bool,
    /// Output address width in bits (the host address width, MGAW): entry
    /// address bits at or above it are reserved. 52 disables the check.
    pub oaw: u8,
    /// Set A (and D on writes) as the architecture requires.
    pub update_ad: bool,
}

impl Default for FlOptions {
    fn default() -> Self {
        FlOptions {
            privileged: false,
            wpe: false,
            nxe: true,
            smep: false,
            allow_1g: true,
            oaw: 48,
            update_ad: true,
        }
    }
}

/// Inputs of a second-level walk (VT-d 3.7, 9.8; CAP.SLLPS, SLEE, SLADE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlOptions {
    /// 2 MiB pages supported (CAP.SLLPS bit 0).
    pub allow_2m: bool,
    /// 1 GiB pages supported (CAP.SLLPS bit 1).
    pub allow_1g: bool,
    /// Execute permission is checked (SLEE): X is part of "present" and an
    /// execute request needs X. Otherwise X is ignored and execute requests
    /// need only read.
    pub exec: bool,
    /// Set A/D bits (SLADE).
    pub update_ad: bool,
    /// Output address width in bits (MGAW): entry address bits at or above
    /// it are reserved. 52 disables the check.
    pub oaw: u8,
}

impl Default for SlOptions {
    fn default() -> Self {
        SlOptions {
            allow_2m: true,
            allow_1g: true,
            exec: false,
            update_ad: false,
            oaw: 48,
        }
    }
}

/// Translates the guest-physical address of a first-level table (or of an
/// entry to update) through another stage: the nested second-level walk.
/// Arguments: the address, and whether it will be written (A/D update).
pub type TableXlate<'a> = dyn FnMut(u64, bool) -> Result<u64, WalkError> + 'a;

fn err(kind: FaultKind, level: u8, entry_addr: u64, entry: Option<u64>) -> WalkError {
    WalkError {
        kind,
        level,
        entry_addr,
        entry,
    }
}

/// Address bits covered below level `level`: 12 + 9 * (level - 1).
fn level_shift(level: u8) -> u32 {
    12u32.saturating_add(9u32.saturating_mul(u32::from(level.saturating_sub(1))))
}

/// Index of `iova` in a table at `level`.
fn index(iova: u64, level: u8) -> u64 {
    iova.checked_shr(level_shift(level)).unwrap_or(0) & 0x1ff
}

/// Mask of bits `[lo, hi)`, empty when `lo >= hi`.
fn bits(lo: u32, hi: u32) -> u64 {
    if lo >= hi || lo >= 64 {
        return 0;
    }
    let upper = if hi >= 64 {
        u64::MAX
    } else {
        (1u64 << hi).wrapping_sub(1)
    };
    upper & !((1u64 << lo).wrapping_sub(1))
}

/// Reserved output-address bits: `[oaw, 52)`.
fn addr_rsvd(oaw: u8) -> u64 {
    bits(u32::from(oaw.min(52)), 52)
}

fn page_size_at(level: u8) -> Option<PageSize> {
    match level {
        1 => Some(PageSize::SIZE_4K),
        2 => Some(PageSize::SIZE_2M),
        3 => Some(PageSize::SIZE_1G),
        _ => None,
    }
}

fn entry_addr(table: u64, iova: u64, level: u8) -> Option<u64> {
    table.checked_add(index(iova, level).checked_mul(8)?)
}

fn read_entry(mem: &dyn GuestRam, addr: u64, level: u8) -> Result<u64, WalkError> {
    mem.read_u64(Gpa(addr))
        .map_err(|_| err(FaultKind::WalkAbort, level, addr, None))
}

/// True when `iova` is canonical for a `levels`-level first-level table
/// (bits 63 down to the top translated bit are all equal), VT-d 3.6.
pub fn is_canonical(iova: u64, levels: u8) -> bool {
    let top = level_shift(levels).saturating_add(9); // 48 or 57
    let sign_bits = bits(top.saturating_sub(1), 64);
    let v = iova & sign_bits;
    v == 0 || v == sign_bits
}

/// Walk a first-level (x86-64 IA-32e) table of `levels` (4 or 5) levels at
/// `root` for a request needing `access` (VT-d 3.6).
pub fn walk_first_level(
    mem: &dyn GuestRam,
    root: u64,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &FlOptions,
) -> Result<WalkOutput, WalkError> {
    walk_first_level_classified(mem, root, levels, iova, access, opts, None).map_err(|(e, _)| e)
}

struct Step {
    /// Address of the entry as the walker accesses it (after nesting).
    addr: u64,
    /// Address in the first-level address space (before nesting).
    gpa: u64,
    value: u64,
    level: u8,
}

/// [`walk_first_level`] with the permission detail, and with an optional
/// translator for table addresses (nested translation, VT-d 3.8: every
/// first-level table address is a guest-physical address translated by the
/// second level). The output address is *not* translated by `xlate`: the
/// caller composes it with the second stage.
pub fn walk_first_level_classified(
    mem: &dyn GuestRam,
    root: u64,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &FlOptions,
    xlate: Option<&mut TableXlate<'_>>,
) -> Result<WalkOutput, (WalkError, Option<Denial>)> {
    walk_first_level_from(
        mem,
        WalkStart::first_level_root(root, levels),
        levels,
        iova,
        access,
        opts,
        xlate,
    )
}

/// [`walk_first_level_classified`] resuming at `start` (the root, or a
/// table from a paging-structure cache). A/D bits are only updated in the
/// entries this walk reads; entries above `start` had A set when they were
/// cached. If an A/D update races with a change, the walk restarts from
/// `start`.
pub fn walk_first_level_from(
    mem: &dyn GuestRam,
    start: WalkStart,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &FlOptions,
    mut xlate: Option<&mut TableXlate<'_>>,
) -> Result<WalkOutput, (WalkError, Option<Denial>)> {
    let root = start.table;
    if !matches!(levels, 4 | 5) || start.level == 0 || start.level > levels {
        return Err((err(FaultKind::BadConfig, levels, root, None), None));
    }
    if !is_canonical(iova, levels) {
        return Err((err(FaultKind::AddressSize, levels, root, None), None));
    }
    let mut reads = 0u8;
    let mut restarts = 0u8;
    'restart: loop {
        let mut path: [Option<Step>; 5] = [None, None, None, None, None];
        let mut nonleaf: [Option<WalkStart>; 6] = [None; 6];
        let mut table = root & ADDR_MASK;
        let mut level = start.level;
        let mut rw = start.rights & fl::RW != 0;
        let mut us = start.rights & fl::US != 0;
        let mut xd = start.rights & fl::XD != 0;
        let (leaf_level, leaf) = loop {
            let gpa = entry_addr(table, iova, level)
                .ok_or((err(FaultKind::WalkAbort, level, table, None), None))?;
            let addr = match xlate.as_deref_mut() {
                Some(x) => x(gpa, false).map_err(|e| (e, None))?,
                None => gpa,
            };
            let e = read_entry(mem, addr, level).map_err(|e| (e, None))?;
            reads = reads.saturating_add(1);
            if e & fl::P == 0 {
                return Err((err(FaultKind::NotPresent, level, gpa, Some(e)), None));
            }
            let ps = e & fl::PS != 0;
            let mut rsvd = addr_rsvd(opts.oaw);
            let is_leaf = match level {
                1 => true,
                2 => ps,
                3 => {
                    if ps && !opts.allow_1g {
                        rsvd |= fl::PS;
                    }
                    ps
                }
                _ => {
                    // PS is reserved in PML4E and PML5E.
                    rsvd |= fl::PS;
                    false
                }
            };
            if is_leaf && level > 1 {
                // Large page: address bits below the page size, except PAT.
                rsvd |= bits(13, level_shift(level));
            }
            if e & rsvd != 0 {
                return Err((err(FaultKind::ReservedBits, level, gpa, Some(e)), None));
            }
            rw &= e & fl::RW != 0;
            us &= e & fl::US != 0;
            xd |= e & fl::XD != 0;
            if let Some(slot) = path.get_mut(usize::from(level.saturating_sub(1))) {
                *slot = Some(Step {
                    addr,
                    gpa,
                    value: e,
                    level,
                });
            }
            if is_leaf {
                break (level, e);
            }
            table = e & ADDR_MASK;
            if let Some(slot) = nonleaf.get_mut(usize::from(level)) {
                let mut rights = 0;
                if rw {
                    rights |= fl::RW;
                }
                if us {
                    rights |= fl::US;
                }
                if xd {
                    rights |= fl::XD;
                }
                *slot = Some(WalkStart {
                    table,
                    level: level.saturating_sub(1),
                    rights,
                });
            }
            level = level.saturating_sub(1);
            if level == 0 {
                return Err((err(FaultKind::WalkAbort, 0, gpa, Some(e)), None));
            }
        };
        let size = page_size_at(leaf_level).ok_or((
            err(FaultKind::WalkAbort, leaf_level, table, Some(leaf)),
            None,
        ))?;
        let leaf_gpa = path
            .get(usize::from(leaf_level.saturating_sub(1)))
            .and_then(|s| s.as_ref())
            .map_or(table, |s| s.gpa);
        // Rights for this request (VT-d 3.6.1 with the IA-32e rules).
        let write_ok = if opts.privileged {
            rw || !opts.wpe
        } else {
            rw && us
        };
        let exec_ok = {
            let xd_denies = opts.nxe && xd;
            let smep_denies = opts.privileged && opts.smep && us;
            !xd_denies && !smep_denies && (opts.privileged || us)
        };
        let mut perm = Perm::empty();
        if opts.privileged || us {
            perm |= Perm::R;
        }
        if write_ok {
            perm |= Perm::W;
        }
        if exec_ok {
            perm |= Perm::X;
        }
        let denial = if !opts.privileged && !us {
            Some(Denial::User)
        } else if access.contains(Perm::W) && !write_ok {
            Some(Denial::Write)
        } else if access.contains(Perm::X) && !exec_ok {
            Some(Denial::Execute)
        } else {
            None
        };
        if let Some(d) = denial {
            return Err((
                err(FaultKind::Permission, leaf_level, leaf_gpa, Some(leaf)),
                Some(d),
            ));
        }
        // A/D updates, top level first (VT-d 3.6.2).
        let mut ad_updates = 0u8;
        if opts.update_ad {
            for step in path.iter().rev().flatten() {
                let mut want = step.value | fl::A;
                if step.level == leaf_level && access.contains(Perm::W) {
                    want |= fl::D;
                }
                if want == step.value {
                    continue;
                }
                let addr = match xlate.as_deref_mut() {
                    Some(x) => x(step.gpa, true).map_err(|e| (e, None))?,
                    None => step.addr,
                };
                match mem.compare_exchange_u64(Gpa(addr), step.value, want) {
                    Ok(Ok(_)) => ad_updates = ad_updates.saturating_add(1),
                    Ok(Err(_)) => {
                        restarts = restarts.saturating_add(1);
                        if restarts > MAX_RESTARTS {
                            return Err((
                                err(FaultKind::WalkAbort, step.level, step.gpa, Some(step.value)),
                                None,
                            ));
                        }
                        continue 'restart;
                    }
                    Err(_) => {
                        return Err((
                            err(FaultKind::WalkAbort, step.level, step.gpa, Some(step.value)),
                            None,
                        ));
                    }
                }
                if step.level == leaf_level {
                    break;
                }
            }
        }
        let base = leaf & ADDR_MASK & !size.offset_mask();
        return Ok(WalkOutput {
            output: base | (iova & size.offset_mask()),
            page_size: size,
            perm,
            user: us,
            reads,
            ad_updates,
            nonleaf,
        });
    }
}

/// Walk a VT-d second-level table of `levels` (3, 4 or 5) levels at `root`
/// for a request needing `access` (VT-d 3.7).
pub fn walk_second_level(
    mem: &dyn GuestRam,
    root: u64,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &SlOptions,
) -> Result<WalkOutput, WalkError> {
    walk_second_level_classified(mem, root, levels, iova, access, opts).map_err(|(e, _)| e)
}

/// Input address width of a `levels`-level second-level table (the AGAW:
/// 39, 48 or 57 bits).
pub fn agaw_bits(levels: u8) -> u32 {
    level_shift(levels).saturating_add(9)
}

/// [`walk_second_level`] with the permission detail.
pub fn walk_second_level_classified(
    mem: &dyn GuestRam,
    root: u64,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &SlOptions,
) -> Result<WalkOutput, (WalkError, Option<Denial>)> {
    walk_second_level_from(
        mem,
        WalkStart::second_level_root(root, levels),
        levels,
        iova,
        access,
        opts,
    )
}

/// [`walk_second_level_classified`] resuming at `start` (the root, or a
/// table from a paging-structure cache).
pub fn walk_second_level_from(
    mem: &dyn GuestRam,
    start: WalkStart,
    levels: u8,
    iova: u64,
    access: Perm,
    opts: &SlOptions,
) -> Result<WalkOutput, (WalkError, Option<Denial>)> {
    let root = start.table;
    if !matches!(levels, 3..=5) || start.level == 0 || start.level > levels {
        return Err((err(FaultKind::BadConfig, levels, root, None), None));
    }
    if iova & bits(agaw_bits(levels), 64) != 0 {
        return Err((err(FaultKind::AddressSize, levels, root, None), None));
    }
    let present_mask = if opts.exec {
        sl::R | sl::W | sl::X
    } else {
        sl::R | sl::W
    };
    let mut reads = 0u8;
    let mut restarts = 0u8;
    'restart: loop {
        let mut path: [Option<(u64, u64, u8)>; 5] = [None; 5];
        let mut nonleaf: [Option<WalkStart>; 6] = [None; 6];
        let mut table = root & ADDR_MASK;
        let mut level = start.level;
        let mut eff = start.rights & (sl::R | sl::W | sl::X);
        let (leaf_level, leaf, leaf_addr) = loop {
            let addr = entry_addr(table, iova, level)
                .ok_or((err(FaultKind::WalkAbort, level, table, None), None))?;
            let e = read_entry(mem, addr, level).map_err(|e| (e, None))?;
            reads = reads.saturating_add(1);
            if e & present_mask == 0 {
                return Err((err(FaultKind::NotPresent, level, addr, Some(e)), None));
            }
            let ps = e & sl::PS != 0;
            let mut rsvd = addr_rsvd(opts.oaw);
            let is_leaf = match level {
                1 => true,
                2 => {
                    if ps && !opts.allow_2m {
                        rsvd |= sl::PS;
                    }
                    ps
                }
                3 => {
                    if ps && !opts.allow_1g {
                        rsvd |= sl::PS;
                    }
                    ps
                }
                _ => {
                    rsvd |= sl::PS;
                    false
                }
            };
            if is_leaf && level > 1 {
                rsvd |= bits(12, level_shift(level));
            }
            if e & rsvd != 0 {
                return Err((err(FaultKind::ReservedBits, level, addr, Some(e)), None));
            }
            eff &= e;
            if let Some(slot) = path.get_mut(usize::from(level.saturating_sub(1))) {
                *slot = Some((addr, e, level));
            }
            if is_leaf {
                break (level, e, addr);
            }
            table = e & ADDR_MASK;
            if let Some(slot) = nonleaf.get_mut(usize::from(level)) {
                *slot = Some(WalkStart {
                    table,
                    level: level.saturating_sub(1),
                    rights: eff & (sl::R | sl::W | sl::X),
                });
            }
            level = level.saturating_sub(1);
            if level == 0 {
                return Err((err(FaultKind::WalkAbort, 0, addr, Some(e)), None));
            }
        };
        let size = page_size_at(leaf_level).ok_or((
            err(FaultKind::WalkAbort, leaf_level, leaf_addr, Some(leaf)),
            None,
        ))?;
        let mut perm = Perm::empty();
        if eff & sl::R != 0 {
            perm |= Perm::R;
        }
        if eff & sl::W != 0 {
            perm |= Perm::W;
        }
        let exec_ok = if opts.exec {
            eff & sl::X != 0
        } else {
            eff & sl::R != 0
        };
        if exec_ok {
            perm |= Perm::X;
        }
        let denial = if access.contains(Perm::R) && !perm.contains(Perm::R) {
            Some(Denial::Read)
        } else if access.contains(Perm::W) && !perm.contains(Perm::W) {
            Some(Denial::Write)
        } else if access.contains(Perm::X) && !exec_ok {
            Some(Denial::Execute)
        } else {
            None
        };
        if let Some(d) = denial {
            return Err((
                err(FaultKind::Permission, leaf_level, leaf_addr, Some(leaf)),
                Some(d),
            ));
        }
        let mut ad_updates = 0u8;
        if opts.update_ad {
            for (addr, value, lvl) in path.iter().rev().flatten().copied() {
                let mut want = value | sl::A;
                if lvl == leaf_level && access.contains(Perm::W) {
                    want |= sl::D;
                }
                if want != value {
                    match mem.compare_exchange_u64(Gpa(addr), value, want) {
                        Ok(Ok(_)) => ad_updates = ad_updates.saturating_add(1),
                        Ok(Err(_)) => {
                            restarts = restarts.saturating_add(1);
                            if restarts > MAX_RESTARTS {
                                return Err((
                                    err(FaultKind::WalkAbort, lvl, addr, Some(value)),
                                    None,
                                ));
                            }
                            continue 'restart;
                        }
                        Err(_) => {
                            return Err((err(FaultKind::WalkAbort, lvl, addr, Some(value)), None));
                        }
                    }
                }
                if lvl == leaf_level {
                    break;
                }
            }
        }
        let base = leaf & ADDR_MASK & !size.offset_mask();
        return Ok(WalkOutput {
            output: base | (iova & size.offset_mask()),
            page_size: size,
            perm,
            user: true,
            reads,
            ad_updates,
            nonleaf,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRam;
    use crate::testing::x86_pt::{Format, X86PageTable};

    const G: u64 = 1 << 30;

    fn ram() -> FakeRam {
        FakeRam::new(4 * G)
    }

    fn fl4(r: &FakeRam) -> X86PageTable<'_> {
        X86PageTable::new(r, Format::FirstLevel { levels: 4 })
    }

    fn sl(r: &FakeRam, levels: u8) -> X86PageTable<'_> {
        X86PageTable::new(r, Format::SecondLevel { levels })
    }

    fn flw(
        r: &FakeRam,
        pt: &X86PageTable<'_>,
        iova: u64,
        access: Perm,
    ) -> Result<WalkOutput, WalkError> {
        walk_first_level(r, pt.root().0, 4, iova, access, &FlOptions::default())
    }

    // VT-d 3.6: a 4 KiB mapping translates with the page offset kept.
    #[test]
    fn fl_walk_4k_page_translates() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1234_5000, 0x8000_0000, PageSize::SIZE_4K, Perm::RW)
            .unwrap();
        let o = flw(&r, &pt, 0x1234_5abc, Perm::R).unwrap();
        assert_eq!(o.output, 0x8000_0abc);
        assert_eq!(o.page_size, PageSize::SIZE_4K);
        assert_eq!(o.reads, 4);
        assert!(o.perm.contains(Perm::RW));
    }

    // VT-d 3.6 / 9.7: PS at the PDE maps 2 MiB.
    #[test]
    fn fl_walk_2m_page_translates() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x4020_0000, 0x1_0000_0000, PageSize::SIZE_2M, Perm::R)
            .unwrap();
        let o = flw(&r, &pt, 0x4021_2345, Perm::R).unwrap();
        assert_eq!(o.output, 0x1_0001_2345);
        assert_eq!(o.page_size, PageSize::SIZE_2M);
        assert_eq!(o.reads, 3);
    }

    // VT-d 9.7: PS at the PDPE maps 1 GiB only with FL1GP.
    #[test]
    fn fl_walk_1g_page_needs_fl1gp() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x80_4000_0000, 0x4000_0000, PageSize::SIZE_1G, Perm::RW)
            .unwrap();
        let o = flw(&r, &pt, 0x80_4123_4567, Perm::W).unwrap();
        assert_eq!(o.output, 0x4123_4567);
        assert_eq!(o.page_size, PageSize::SIZE_1G);
        let opts = FlOptions {
            allow_1g: false,
            ..FlOptions::default()
        };
        let e = walk_first_level(&r, pt.root().0, 4, 0x80_4123_4567, Perm::R, &opts).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 3));
    }

    // VT-d 3.6: P=0 stops the walk with the level where it was found.
    #[test]
    fn fl_walk_not_present_reports_level() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        let e = flw(&r, &pt, 0x5000, Perm::R).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 1));
        let e = flw(&r, &pt, 0x80_0000_0000, Perm::R).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::NotPresent, 4));
        assert_eq!(e.entry_addr, pt.root().0 + 8);
    }

    // VT-d 3.6: R/W=0 denies writes of user requests.
    #[test]
    fn fl_walk_read_only_denies_write() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        let (e, d) = walk_first_level_classified(
            &r,
            pt.root().0,
            4,
            0x1000,
            Perm::W,
            &FlOptions::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.level, d),
            (FaultKind::Permission, 1, Some(Denial::Write))
        );
        assert!(flw(&r, &pt, 0x1000, Perm::R).is_ok());
    }

    // VT-d 3.6.1: supervisor writes ignore R/W unless WPE.
    #[test]
    fn fl_walk_supervisor_write_honours_wpe() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        let mut o = FlOptions {
            privileged: true,
            ..FlOptions::default()
        };
        assert!(walk_first_level(&r, pt.root().0, 4, 0x1000, Perm::W, &o).is_ok());
        o.wpe = true;
        let e = walk_first_level(&r, pt.root().0, 4, 0x1000, Perm::W, &o).unwrap_err();
        assert_eq!(e.kind, FaultKind::Permission);
    }

    // VT-d 3.6.1: U/S=0 anywhere makes the page supervisor-only.
    #[test]
    fn fl_walk_user_request_to_supervisor_page_denied() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        pt.set_bits(0x1000, 0, fl::US).unwrap();
        let (e, d) = walk_first_level_classified(
            &r,
            pt.root().0,
            4,
            0x1000,
            Perm::R,
            &FlOptions::default(),
            None,
        )
        .unwrap_err();
        assert_eq!((e.kind, d), (FaultKind::Permission, Some(Denial::User)));
        let o = FlOptions {
            privileged: true,
            ..FlOptions::default()
        };
        assert!(walk_first_level(&r, pt.root().0, 4, 0x1000, Perm::RW, &o).is_ok());
    }

    // VT-d 9.7: XD denies execute when NXE; SMEP denies supervisor fetch of user pages.
    #[test]
    fn fl_walk_xd_and_smep_deny_execute() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap(); // no X: XD set
        pt.map(0x3000, 0x4000, PageSize::SIZE_4K, Perm::R | Perm::X)
            .unwrap();
        let exec = Perm::R | Perm::X;
        let (_, d) = walk_first_level_classified(
            &r,
            pt.root().0,
            4,
            0x1000,
            exec,
            &FlOptions::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(d, Some(Denial::Execute));
        let no_nxe = FlOptions {
            nxe: false,
            ..FlOptions::default()
        };
        assert!(walk_first_level(&r, pt.root().0, 4, 0x1000, exec, &no_nxe).is_ok());
        assert!(flw(&r, &pt, 0x3000, exec).is_ok());
        let smep = FlOptions {
            privileged: true,
            smep: true,
            ..FlOptions::default()
        };
        assert!(walk_first_level(&r, pt.root().0, 4, 0x3000, exec, &smep).is_err());
    }

    // VT-d 3.6: non-canonical input addresses fault.
    #[test]
    fn fl_walk_non_canonical_address_faults() {
        let r = ram();
        let pt = fl4(&r);
        let e = flw(&r, &pt, 0x0000_8000_0000_0000, Perm::R).unwrap_err();
        assert_eq!(e.kind, FaultKind::AddressSize);
        assert!(is_canonical(0xffff_8000_0000_0000, 4));
        assert!(!is_canonical(0x0100_0000_0000_0000, 5));
        assert!(is_canonical(0xff00_0000_0000_0000, 5));
    }

    // VT-d 9.7: address bits above the host address width are reserved.
    #[test]
    fn fl_walk_address_above_haw_is_reserved() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        pt.set_bits(0x1000, 1 << 40, 0).unwrap();
        let o = FlOptions {
            oaw: 39,
            ..FlOptions::default()
        };
        let e = walk_first_level(&r, pt.root().0, 4, 0x1000, Perm::R, &o).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 1));
        assert!(flw(&r, &pt, 0x1000, Perm::R).is_ok());
    }

    // VT-d 9.7: bits 20:13 of a 2 MiB leaf are reserved; PS in a PML4E is reserved.
    #[test]
    fn fl_walk_large_page_reserved_bits_fault() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x20_0000, 0x40_0000, PageSize::SIZE_2M, Perm::R)
            .unwrap();
        pt.set_bits(0x20_0000, 1 << 13, 0).unwrap();
        assert_eq!(
            flw(&r, &pt, 0x20_0000, Perm::R).unwrap_err().kind,
            FaultKind::ReservedBits
        );
        pt.set_bits(0x20_0000, fl::PAT_LARGE, 1 << 13).unwrap();
        assert!(flw(&r, &pt, 0x20_0000, Perm::R).is_ok());
        let pml4e = r.read_u64(pt.root()).unwrap();
        r.write_u64(pt.root(), pml4e | fl::PS).unwrap();
        let e = flw(&r, &pt, 0x20_0000, Perm::R).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 4));
    }

    // VT-d 3.6.2: A is set on every entry used, D on the leaf for writes only.
    #[test]
    fn fl_walk_sets_accessed_and_dirty() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        let leaf = pt.leaf_entry_addr(0x1000).unwrap();
        let o = flw(&r, &pt, 0x1000, Perm::R).unwrap();
        assert_eq!(o.ad_updates, 4);
        let e = r.read_u64(leaf).unwrap();
        assert_eq!(e & (fl::A | fl::D), fl::A);
        assert_ne!(r.read_u64(pt.root()).unwrap() & fl::A, 0);
        let o = flw(&r, &pt, 0x1000, Perm::W).unwrap();
        assert_eq!(o.ad_updates, 1);
        assert_ne!(r.read_u64(leaf).unwrap() & fl::D, 0);
        assert_eq!(flw(&r, &pt, 0x1000, Perm::W).unwrap().ad_updates, 0);
    }

    // VT-d 3.6.2: a denied request sets no A/D bit.
    #[test]
    fn fl_walk_denied_request_leaves_ad_clear() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        let leaf = pt.leaf_entry_addr(0x1000).unwrap();
        assert!(flw(&r, &pt, 0x1000, Perm::W).is_err());
        assert_eq!(r.read_u64(leaf).unwrap() & fl::A, 0);
    }

    // VT-d 3.6: a 5-level table translates 57-bit canonical addresses.
    #[test]
    fn fl_walk_5_level_translates() {
        let r = ram();
        let pt = X86PageTable::new(&r, Format::FirstLevel { levels: 5 });
        let iova = 0x00ff_1234_5678_9000;
        pt.map(iova, 0x3000, PageSize::SIZE_4K, Perm::R).unwrap();
        let o = walk_first_level(&r, pt.root().0, 5, iova, Perm::R, &FlOptions::default()).unwrap();
        assert_eq!((o.output, o.reads), (0x3000, 5));
    }

    // Guest-controlled table pointers outside RAM abort the walk cleanly.
    #[test]
    fn fl_walk_table_outside_ram_aborts() {
        let r = FakeRam::new(0x20_0000);
        let e = walk_first_level(&r, 0x40_0000, 4, 0, Perm::R, &FlOptions::default()).unwrap_err();
        assert_eq!(e.kind, FaultKind::WalkAbort);
        r.write_u64(Gpa(0x1000), 0xffff_f000 | fl::P | fl::RW | fl::US)
            .unwrap();
        let e = walk_first_level(&r, 0x1000, 4, 0, Perm::R, &FlOptions::default()).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::WalkAbort, 3));
    }

    // VT-d 3.8: nested walks translate every table address through the hook.
    #[test]
    fn fl_walk_nested_translates_table_addresses() {
        let r = ram();
        let pt = fl4(&r);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        let mut seen = Vec::new();
        let mut x = |gpa: u64, _w: bool| {
            seen.push(gpa);
            Ok(gpa)
        };
        let o = walk_first_level_classified(
            &r,
            pt.root().0,
            4,
            0x1000,
            Perm::R,
            &FlOptions {
                update_ad: false,
                ..FlOptions::default()
            },
            Some(&mut x),
        )
        .unwrap();
        assert_eq!(o.output, 0x2000);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], pt.root().0);
        let mut fail = |gpa: u64, _w: bool| {
            Err(WalkError {
                kind: FaultKind::NotPresent,
                level: 1,
                entry_addr: gpa,
                entry: None,
            })
        };
        let (e, _) = walk_first_level_classified(
            &r,
            pt.root().0,
            4,
            0x1000,
            Perm::R,
            &FlOptions::default(),
            Some(&mut fail),
        )
        .unwrap_err();
        assert_eq!(e.kind, FaultKind::NotPresent);
    }

    fn slw(
        r: &FakeRam,
        pt: &X86PageTable<'_>,
        levels: u8,
        iova: u64,
        access: Perm,
    ) -> Result<WalkOutput, WalkError> {
        walk_second_level(r, pt.root().0, levels, iova, access, &SlOptions::default())
    }

    // VT-d 3.7: 3-, 4- and 5-level second-level tables translate.
    #[test]
    fn sl_walk_3_4_5_levels_translate() {
        for levels in 3..=5u8 {
            let r = ram();
            let pt = sl(&r, levels);
            let iova = 0x7f_ffff_f000 & ((1u64 << agaw_bits(levels)) - 1);
            pt.map(iova, 0x5000, PageSize::SIZE_4K, Perm::RW).unwrap();
            let o = slw(&r, &pt, levels, iova | 0x12, Perm::RW).unwrap();
            assert_eq!((o.output, o.reads), (0x5012, levels), "levels {levels}");
        }
    }

    // VT-d 3.7: addresses beyond the AGAW fault.
    #[test]
    fn sl_walk_beyond_agaw_faults() {
        let r = ram();
        let pt = sl(&r, 3);
        let e = slw(&r, &pt, 3, 1 << 39, Perm::R).unwrap_err();
        assert_eq!(e.kind, FaultKind::AddressSize);
    }

    // VT-d 9.8: R=W=0 is not present; permissions are per request.
    #[test]
    fn sl_walk_permissions_and_not_present() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        pt.map(0x3000, 0x4000, PageSize::SIZE_4K, Perm::W).unwrap();
        let c = |iova, a| {
            walk_second_level_classified(&r, pt.root().0, 4, iova, a, &SlOptions::default())
                .map_err(|(e, d)| (e.kind, d))
        };
        assert!(c(0x1000, Perm::R).is_ok());
        assert_eq!(
            c(0x1000, Perm::W).unwrap_err(),
            (FaultKind::Permission, Some(Denial::Write))
        );
        assert_eq!(
            c(0x3000, Perm::R).unwrap_err(),
            (FaultKind::Permission, Some(Denial::Read))
        );
        assert!(c(0x3000, Perm::W).is_ok());
        assert_eq!(c(0x5000, Perm::R).unwrap_err().0, FaultKind::NotPresent);
    }

    // VT-d 9.8: X is checked only with SLEE.
    #[test]
    fn sl_walk_execute_needs_x_with_slee() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        let exec = Perm::R | Perm::X;
        assert!(slw(&r, &pt, 4, 0x1000, exec).is_ok());
        let o = SlOptions {
            exec: true,
            ..SlOptions::default()
        };
        assert!(walk_second_level(&r, pt.root().0, 4, 0x1000, exec, &o).is_err());
        pt.set_perm(0x1000, Perm::R | Perm::X).unwrap();
        assert!(walk_second_level(&r, pt.root().0, 4, 0x1000, exec, &o).is_ok());
    }

    // VT-d 9.8 / CAP.SLLPS: large pages need the capability; PS at level 4 is reserved.
    #[test]
    fn sl_walk_large_pages_follow_sllps() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x20_0000, 0x60_0000, PageSize::SIZE_2M, Perm::RW)
            .unwrap();
        pt.map(0x4000_0000, 0x8000_0000, PageSize::SIZE_1G, Perm::RW)
            .unwrap();
        assert_eq!(
            slw(&r, &pt, 4, 0x20_1234, Perm::R).unwrap().output,
            0x60_1234
        );
        assert_eq!(
            slw(&r, &pt, 4, 0x4123_4567, Perm::R).unwrap().output,
            0x8123_4567
        );
        let no = SlOptions {
            allow_2m: false,
            allow_1g: false,
            ..SlOptions::default()
        };
        let e = walk_second_level(&r, pt.root().0, 4, 0x20_1234, Perm::R, &no).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 2));
        let e = walk_second_level(&r, pt.root().0, 4, 0x4123_4567, Perm::R, &no).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 3));
        let top = r.read_u64(pt.root()).unwrap();
        r.write_u64(pt.root(), top | sl::PS).unwrap();
        let e = slw(&r, &pt, 4, 0x20_1234, Perm::R).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 4));
    }

    // VT-d 9.8: SNP, TM and the ignored high bits do not fault; address bits above MGAW do.
    #[test]
    fn sl_walk_ignored_and_reserved_bits() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        pt.set_bits(0x1000, sl::SNP | sl::TM | (1 << 63) | (1 << 55), 0)
            .unwrap();
        assert_eq!(slw(&r, &pt, 4, 0x1000, Perm::R).unwrap().output, 0x2000);
        pt.set_bits(0x1000, 1 << 47, 0).unwrap();
        let o = SlOptions {
            oaw: 39,
            ..SlOptions::default()
        };
        let e = walk_second_level(&r, pt.root().0, 4, 0x1000, Perm::R, &o).unwrap_err();
        assert_eq!((e.kind, e.level), (FaultKind::ReservedBits, 1));
        pt.set_bits(0x20_0000, 0, 0).unwrap_err(); // not mapped
    }

    // VT-d 3.7.2: with SLADE, A on every entry and D on the leaf for writes.
    #[test]
    fn sl_walk_sets_ad_only_with_slade() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        let leaf = pt.leaf_entry_addr(0x1000).unwrap();
        slw(&r, &pt, 4, 0x1000, Perm::W).unwrap();
        assert_eq!(r.read_u64(leaf).unwrap() & (sl::A | sl::D), 0);
        let o = SlOptions {
            update_ad: true,
            ..SlOptions::default()
        };
        let out = walk_second_level(&r, pt.root().0, 4, 0x1000, Perm::W, &o).unwrap();
        assert_eq!(out.ad_updates, 4);
        assert_eq!(r.read_u64(leaf).unwrap() & (sl::A | sl::D), sl::A | sl::D);
    }

    // Builder: unmap makes the address fault again; remap over a 4K table is refused.
    #[test]
    fn builder_unmap_and_conflicts() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::RW).unwrap();
        assert!(pt.map(0x0, 0x0, PageSize::SIZE_2M, Perm::RW).is_err());
        assert!(pt.unmap(0x1000));
        assert!(!pt.unmap(0x1000));
        assert_eq!(
            slw(&r, &pt, 4, 0x1000, Perm::R).unwrap_err().kind,
            FaultKind::NotPresent
        );
        assert!(pt.map(0x1001, 0x2000, PageSize::SIZE_4K, Perm::RW).is_err());
    }

    // VT-d 6.2.5: a walk resumed from a cached non-leaf entry gives the
    // same result with fewer reads, and keeps the upper levels' rights.
    #[test]
    fn walk_resumed_from_nonleaf_matches_full_walk() {
        let r = ram();
        let pt = sl(&r, 4);
        pt.map(0x1000, 0x2000, PageSize::SIZE_4K, Perm::R).unwrap();
        pt.map(0x3000, 0x4000, PageSize::SIZE_4K, Perm::RW).unwrap();
        let full = slw(&r, &pt, 4, 0x1000, Perm::R).unwrap();
        let start = full.nonleaf[2].unwrap();
        assert_eq!(start.level, 1);
        assert!(full.nonleaf[0].is_none() && full.nonleaf[1].is_none());
        let o =
            walk_second_level_from(&r, start, 4, 0x3008, Perm::W, &SlOptions::default()).unwrap();
        assert_eq!((o.output, o.reads), (0x4008, 1));
        // Rights from above are kept: a read-only upper level denies writes.
        let ro = WalkStart {
            rights: sl::R,
            ..start
        };
        let (e, d) =
            walk_second_level_from(&r, ro, 4, 0x3008, Perm::W, &SlOptions::default()).unwrap_err();
        assert_eq!((e.kind, d), (FaultKind::Permission, Some(Denial::Write)));

        let f = fl4(&r);
        f.map(0x20_0000, 0x60_0000, PageSize::SIZE_2M, Perm::RW)
            .unwrap();
        let full = flw(&r, &f, 0x20_0000, Perm::R).unwrap();
        assert!(full.nonleaf[2].is_none(), "2M leaf at level 2");
        let start = full.nonleaf[3].unwrap();
        let o = walk_first_level_from(
            &r,
            start,
            4,
            0x21_0000,
            Perm::W,
            &FlOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!((o.output, o.reads), (0x61_0000, 1));
        let sup_only = WalkStart {
            rights: fl::RW,
            ..start
        };
        let (_, d) = walk_first_level_from(
            &r,
            sup_only,
            4,
            0x21_0000,
            Perm::R,
            &FlOptions::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(d, Some(Denial::User));
    }
}
