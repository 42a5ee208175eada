//! The command queue (IHI 0070 4): consumed inside the CMDQ_PROD write,
//! bounded by the queue size. An illegal command stops the queue with
//! CMDQ_CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR (4.1.3, 7.1); a failed
//! fetch with CERROR_ABT. The queue resumes when software acknowledges
//! GERROR.CMDQ_ERR through GERRORN (Linux first replaces the bad command).
//!
//! Every command completes synchronously, so CMD_SYNC (4.7.3) completes
//! when consumed: it guarantees that every earlier invalidation has left
//! the caches (see [`iommu_emulator::cache`] for why a concurrent walk
//! cannot re-insert a stale entry).

use std::sync::atomic::Ordering;

use iommu_emulator::{Gpa, GuestRam};

use crate::eventq::ring_of;
use crate::regs::{self, cr0, gerror, queue};
use crate::structs::cmd::{CMD_BYTES, CmdError, Command};
use crate::structs::ste::StreamWorld;
use crate::tlb::TlbKind;
use crate::{DeviceMessage, Smmu, StallResolution, State};

/// CMDQ_CONS.ERR codes (4.1.3).
pub mod cerror {
    /// No error.
    pub const NONE: u64 = 0;
    /// CERROR_ILL: illegal command.
    pub const ILL: u64 = 1;
    /// CERROR_ABT: abort fetching the command.
    pub const ABT: u64 = 2;
    /// CERROR_ATC_INV_SYNC: ATC invalidation timeout (not modelled).
    pub const ATC_INV_SYNC: u64 = 3;
}

impl Smmu {
    /// Whether `cmd` is legal on this implementation (4.1.3: commands for
    /// features that are not implemented are CERROR_ILL).
    fn legal(&self, cmd: &Command) -> bool {
        let c = &self.caps;
        match cmd {
            Command::TlbiEl3All | Command::TlbiEl3Va => false, // Secure only
            Command::TlbiEl2All
            | Command::TlbiEl2Asid { .. }
            | Command::TlbiEl2Va { .. }
            | Command::TlbiEl2Vaa { .. } => c.hyp,
            Command::TlbiS12Vmall { .. } | Command::TlbiS2Ipa { .. } => c.s2,
            Command::TlbiNhAll { .. }
            | Command::TlbiNhAsid { .. }
            | Command::TlbiNhVa { .. }
            | Command::TlbiNhVaa { .. }
            | Command::CfgiCd { .. }
            | Command::CfgiCdAll { .. } => c.s1,
            Command::AtcInv { .. } => c.ats,
            Command::PriResp { .. } => self.config.pri,
            // 4.7.1, 4.7.2: CERROR_ILL when IDR0.STALL_MODEL = 0b01.
            Command::Resume { .. } | Command::StallTerm { .. } => self.config.stall_model.stalls(),
            _ => true,
        }
    }

    /// Consume commands from CMDQ_CONS to CMDQ_PROD (4.1).
    pub(crate) fn process_cmdq(&self, st: &mut State, mem: &dyn GuestRam) {
        if !Self::queue_enabled(st, cr0::CMDQEN) {
            return;
        }
        let g = st.regs.value(regs::GERROR) ^ st.regs.value(regs::GERRORN);
        if g & gerror::CMDQ_ERR != 0 {
            return; // halted until acknowledged
        }
        let (base, ring) = ring_of(st.regs.value(regs::CMDQ_BASE), self.config.cmdq_log2);
        let mask = u64::from(ring.ptr_mask());
        let prod = u32::try_from(st.regs.value(regs::CMDQ_PROD) & mask).unwrap_or(0);
        let mut cons = u32::try_from(st.regs.value(regs::CMDQ_CONS) & mask).unwrap_or(0);
        let mut err = cerror::NONE;
        // Bounded: at most two passes over the ring per write. A guest that
        // moves PROD more than a full queue ahead of CONS (over-full, a
        // software error) still gets CONS == PROD: the SMMU consumes until
        // the pointers meet, re-reading slots, as hardware would.
        let mut budget = ring.len().saturating_mul(2);
        while !ring.queue_empty(prod, cons) && budget > 0 {
            budget = budget.saturating_sub(1);
            let addr = base.saturating_add(u64::from(ring.index(cons)).saturating_mul(CMD_BYTES));
            let words = match iommu_emulator::mem::read_words::<2>(mem, Gpa(addr)) {
                Ok(w) => w,
                Err(_) => {
                    err = cerror::ABT;
                    break;
                }
            };
            let opcode = Command::opcode(words[0]);
            let cmd = Command::decode(words).and_then(|c| {
                if self.legal(&c) {
                    Ok(c)
                } else {
                    Err(CmdError::Reserved(opcode))
                }
            });
            match cmd {
                Ok(cmd) => {
                    self.stats.count_command(opcode);
                    self.execute(st, mem, &cmd, addr);
                }
                Err(e) => {
                    tracing::warn!(opcode, %e, "SMMU CERROR_ILL");
                    self.stats.commands_illegal.fetch_add(1, Ordering::Relaxed);
                    err = cerror::ILL;
                    break;
                }
            }
            cons = ring.next(cons);
        }
        // ERR is meaningful only while GERROR.CMDQ_ERR is active; a
        // resumed queue reports CERROR_NONE.
        st.regs.set(
            regs::CMDQ_CONS,
            u64::from(cons) | ((err << queue::ERR_SHIFT) & queue::ERR),
        );
        if err != cerror::NONE {
            self.raise_gerror(st, mem, gerror::CMDQ_ERR);
        }
    }

    fn execute(&self, st: &mut State, mem: &dyn GuestRam, cmd: &Command, _addr: u64) {
        let ril = self.config.ril;
        let s2 = self.caps.s2;
        let vm = move |tag_vmid: u16, vmid: u16| !s2 || tag_vmid == vmid;
        let ns = |w: StreamWorld| w == StreamWorld::NsEl1;
        let s1ish = |k: TlbKind| matches!(k, TlbKind::S1 | TlbKind::Nested);
        // 6.3.9.6: with SMMUEN = 0 the ATS interface is not operational:
        // CMD_ATC_INV and CMD_PRI_RESP are ignored.
        let ats_up = st.regs.value(regs::CR0ACK) & cr0::SMMUEN != 0;
        match *cmd {
            Command::PrefetchConfig { .. } | Command::PrefetchAddr { .. } => {
                // 4.2: prefetches are hints; not acted on.
            }
            Command::CfgiSte { sid, .. } => {
                let s = u64::from(sid);
                self.invalidate_stes(s..s.saturating_add(1));
            }
            Command::CfgiSteRange { sid, range } => {
                if range >= 31 {
                    // 4.3.5 CMD_CFGI_ALL.
                    self.ste_cache.invalidate_all();
                    self.cd_cache.invalidate_all();
                } else {
                    let n = 1u64 << (u32::from(range).saturating_add(1));
                    let start = u64::from(sid) & !n.saturating_sub(1);
                    self.invalidate_stes(start..start.saturating_add(n));
                }
            }
            Command::CfgiCd { sid, ssid, .. } => {
                self.cd_cache
                    .invalidate_if(|t, _| t.sid == sid && t.ssid == ssid);
            }
            Command::CfgiCdAll { sid } => {
                self.cd_cache.invalidate_if(|t, _| t.sid == sid);
            }
            Command::CfgiVmsPidm => {}
            Command::TlbiNhAll { vmid } => {
                self.tlb.invalidate_if(|t, _| {
                    ns(t.key.world) && s1ish(t.key.kind) && vm(t.key.vmid, vmid)
                });
            }
            Command::TlbiNhAsid { vmid, asid } => {
                self.tlb.invalidate_if(|t, _| {
                    ns(t.key.world)
                        && s1ish(t.key.kind)
                        && vm(t.key.vmid, vmid)
                        && t.key.asid == Some(asid)
                });
            }
            Command::TlbiNhVa { vmid, asid, addr } => {
                self.tlb.invalidate_range(addr.range(ril), |t| {
                    ns(t.key.world)
                        && s1ish(t.key.kind)
                        && vm(t.key.vmid, vmid)
                        && t.key.asid == Some(asid)
                });
            }
            Command::TlbiNhVaa { vmid, addr } => {
                self.tlb.invalidate_range(addr.range(ril), |t| {
                    ns(t.key.world) && s1ish(t.key.kind) && vm(t.key.vmid, vmid)
                });
            }
            Command::TlbiEl2All => {
                self.tlb
                    .invalidate_if(|t, _| t.key.world == StreamWorld::El2);
            }
            Command::TlbiEl2Asid { asid } => {
                self.tlb.invalidate_if(|t, _| {
                    t.key.world == StreamWorld::El2 && t.key.asid == Some(asid)
                });
            }
            Command::TlbiEl2Va { asid, addr } => {
                self.tlb.invalidate_range(addr.range(ril), |t| {
                    t.key.world == StreamWorld::El2 && t.key.asid == Some(asid)
                });
            }
            Command::TlbiEl2Vaa { addr } => {
                self.tlb
                    .invalidate_range(addr.range(ril), |t| t.key.world == StreamWorld::El2);
            }
            Command::TlbiS12Vmall { vmid } => {
                self.tlb
                    .invalidate_if(|t, _| ns(t.key.world) && t.key.vmid == vmid);
            }
            Command::TlbiS2Ipa { vmid, addr } => {
                self.tlb.invalidate_ipa(vmid, addr.range(ril));
            }
            Command::TlbiNsnhAll => {
                self.tlb.invalidate_if(|t, _| ns(t.key.world));
            }
            Command::TlbiEl3All | Command::TlbiEl3Va => {}
            Command::AtcInv { .. } | Command::PriResp { .. } if !ats_up => {
                self.stats
                    .ats_commands_ignored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?cmd, "ATS command ignored: SMMUEN = 0");
            }
            Command::AtcInv {
                sid,
                ssid,
                addr,
                size,
                global,
            } => self.push_device_message(DeviceMessage::AtcInvalidate {
                sid,
                ssid,
                addr,
                size,
                global,
            }),
            Command::PriResp {
                sid,
                ssid,
                grpid,
                resp,
            } => self.push_device_message(DeviceMessage::PriResponse {
                sid,
                ssid,
                grpid,
                resp,
                automatic: false,
            }),
            Command::Resume {
                sid, stag, retry, ..
            } => {
                // 4.7.1: Retry, or Terminate (with abort: TERM_MODEL = 1
                // makes Ab IGNORED); no effect without a match.
                let r = if retry {
                    StallResolution::Retry
                } else {
                    StallResolution::Abort
                };
                match st.stalls.resume(sid, stag, r) {
                    Some(t) => {
                        let c = if retry {
                            &self.stats.stalls_retried
                        } else {
                            &self.stats.stalls_aborted
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                        self.stall_resolved(&t, r);
                    }
                    None => {
                        self.stats.resumes_unmatched.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(sid, stag, "CMD_RESUME matches no stalled transaction");
                    }
                }
            }
            Command::StallTerm { sid } => {
                // 4.7.2: every stalled transaction of the stream ends with
                // an abort; their STAGs are free again.
                for t in st.stalls.terminate_stream(sid) {
                    self.stats.stalls_terminated.fetch_add(1, Ordering::Relaxed);
                    self.stall_resolved(&t, StallResolution::Abort);
                }
            }
            Command::Sync {
                cs,
                msi_data,
                msi_addr,
            } => {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                if cs == 1 && !self.send_msi(mem, msi_addr, u64::from(msi_data)) {
                    // Completion signalled without an MSI (wired/SEV).
                    self.stats.msi_not_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
