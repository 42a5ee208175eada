//! Command queue entries (IHI 0070 4.1-4.7): 16 bytes, opcode in bits
//! \[7:0\]. Decoding checks only the encoding; whether a command is legal on
//! this implementation (stage 2 present, HYP, ATS, PRI) is decided by
//! `cmdq`.

use crate::regs::field;

/// Size of a command in bytes.
pub const CMD_BYTES: u64 = 16;

/// Command opcodes (4.1.1).
pub mod op {
    /// CMD_PREFETCH_CONFIG (4.2.1).
    pub const PREFETCH_CONFIG: u8 = 0x01;
    /// CMD_PREFETCH_ADDR (4.2.2).
    pub const PREFETCH_ADDR: u8 = 0x02;
    /// CMD_CFGI_STE (4.3.1).
    pub const CFGI_STE: u8 = 0x03;
    /// CMD_CFGI_STE_RANGE and CMD_CFGI_ALL (Range = 31) (4.3.2, 4.3.5).
    pub const CFGI_STE_RANGE: u8 = 0x04;
    /// CMD_CFGI_CD (4.3.3).
    pub const CFGI_CD: u8 = 0x05;
    /// CMD_CFGI_CD_ALL (4.3.4).
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// CMD_CFGI_VMS_PIDM (4.3.7).
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    /// CMD_TLBI_NH_ALL (4.4.2).
    pub const TLBI_NH_ALL: u8 = 0x10;
    /// CMD_TLBI_NH_ASID (4.4.3).
    pub const TLBI_NH_ASID: u8 = 0x11;
    /// CMD_TLBI_NH_VA (4.4.4).
    pub const TLBI_NH_VA: u8 = 0x12;
    /// CMD_TLBI_NH_VAA (4.4.5).
    pub const TLBI_NH_VAA: u8 = 0x13;
    /// CMD_TLBI_EL3_ALL (4.4.6): Secure only.
    pub const TLBI_EL3_ALL: u8 = 0x18;
    /// CMD_TLBI_EL3_VA (4.4.7): Secure only.
    pub const TLBI_EL3_VA: u8 = 0x1a;
    /// CMD_TLBI_EL2_ALL (4.4.8).
    pub const TLBI_EL2_ALL: u8 = 0x20;
    /// CMD_TLBI_EL2_ASID (4.4.9).
    pub const TLBI_EL2_ASID: u8 = 0x21;
    /// CMD_TLBI_EL2_VA (4.4.10).
    pub const TLBI_EL2_VA: u8 = 0x22;
    /// CMD_TLBI_EL2_VAA (4.4.11).
    pub const TLBI_EL2_VAA: u8 = 0x23;
    /// CMD_TLBI_S12_VMALL (4.4.12).
    pub const TLBI_S12_VMALL: u8 = 0x28;
    /// CMD_TLBI_S2_IPA (4.4.13).
    pub const TLBI_S2_IPA: u8 = 0x2a;
    /// CMD_TLBI_NSNH_ALL (4.4.14).
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    /// CMD_ATC_INV (4.5.1).
    pub const ATC_INV: u8 = 0x40;
    /// CMD_PRI_RESP (4.7.1).
    pub const PRI_RESP: u8 = 0x41;
    /// CMD_RESUME (4.6.1).
    pub const RESUME: u8 = 0x44;
    /// CMD_STALL_TERM (4.6.2).
    pub const STALL_TERM: u8 = 0x45;
    /// CMD_SYNC (4.7.3).
    pub const SYNC: u8 = 0x46;
}

/// The address part of a TLBI (4.4.1): a single address or, with
/// IDR3.RIL and TG != 0, a range of `(NUM+1) * 2^SCALE` granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbiAddr {
    /// Address (VA\[63:12\] or IPA\[51:12\]).
    pub addr: u64,
    /// Leaf: only leaf entries need go.
    pub leaf: bool,
    /// TG\[1:0\]: 0 = no range, 1 = 4K, 2 = 16K, 3 = 64K.
    pub tg: u8,
    /// TTL\[1:0\]: level hint.
    pub ttl: u8,
    /// NUM\[4:0\].
    pub num: u8,
    /// SCALE\[4:0\].
    pub scale: u8,
}

impl TlbiAddr {
    /// The input-address range to invalidate; `ril` says whether range
    /// fields are implemented (else they are ignored, 4.4.1).
    pub fn range(&self, ril: bool) -> std::ops::Range<u64> {
        let start = self.addr;
        let gshift = match self.tg {
            1 => 12u32,
            2 => 14,
            3 => 16,
            _ => 0,
        };
        if !ril || gshift == 0 {
            return start..start.saturating_add(1);
        }
        let pages = u64::from(self.num).saturating_add(1);
        let len = pages
            .checked_shl(u32::from(self.scale).saturating_add(gshift))
            .unwrap_or(u64::MAX);
        start..start.saturating_add(len)
    }
}

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // field names are the spec's
pub enum Command {
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    PrefetchAddr {
        sid: u32,
        ssid: Option<u32>,
        addr: u64,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// `range`: invalidate `2^(range+1)` StreamIDs; 31 = all (CMD_CFGI_ALL).
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    CfgiVmsPidm,
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        addr: TlbiAddr,
    },
    TlbiNhVaa {
        vmid: u16,
        addr: TlbiAddr,
    },
    TlbiEl3All,
    TlbiEl3Va,
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        addr: TlbiAddr,
    },
    TlbiEl2Vaa {
        addr: TlbiAddr,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        addr: TlbiAddr,
    },
    TlbiNsnhAll,
    /// `size`: invalidate `2^size` 4 KiB pages at `addr` (aligned).
    AtcInv {
        sid: u32,
        ssid: Option<u32>,
        addr: u64,
        size: u8,
        global: bool,
    },
    /// `resp`: 0 = Invalid request, 1 = Response failure, 2 = Success.
    PriResp {
        sid: u32,
        ssid: Option<u32>,
        grpid: u16,
        resp: u8,
    },
    /// 4.7.1: `retry` is Ac (1 = retry, 0 = terminate), `abort` is Ab
    /// (terminate with abort rather than RAZ/WI; IGNORED with
    /// IDR0.TERM_MODEL = 1).
    Resume {
        sid: u32,
        stag: u16,
        retry: bool,
        abort: bool,
    },
    StallTerm {
        sid: u32,
    },
    /// `cs`: 0 = none, 1 = MSI (IRQ), 2 = SEV.
    Sync {
        cs: u8,
        msi_data: u32,
        msi_addr: u64,
    },
}

/// Why a command could not be decoded (CERROR_ILL, 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// Unknown opcode.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A field holds a reserved value.
    #[error("reserved field value in opcode {0:#x}")]
    Reserved(u8),
}

fn sid(w0: u64) -> u32 {
    u32::try_from(field(w0, 32, 32)).unwrap_or(0)
}

fn ssid(w0: u64) -> u32 {
    u32::try_from(field(w0, 12, 20)).unwrap_or(0)
}

fn ssv(w0: u64) -> Option<u32> {
    (field(w0, 11, 1) != 0).then(|| ssid(w0))
}

fn u16f(w: u64, shift: u32) -> u16 {
    u16::try_from(field(w, shift, 16)).unwrap_or(0)
}

fn u8f(w: u64, shift: u32, width: u32) -> u8 {
    u8::try_from(field(w, shift, width)).unwrap_or(0)
}

fn tlbi_addr(w0: u64, w1: u64, ipa: bool) -> TlbiAddr {
    let mask = if ipa {
        ((1u64 << 52) - 1) & !0xfff
    } else {
        !0xfffu64
    };
    TlbiAddr {
        addr: w1 & mask,
        leaf: field(w1, 0, 1) != 0,
        tg: u8f(w1, 10, 2),
        ttl: u8f(w1, 8, 2),
        num: u8f(w0, 12, 5),
        scale: u8f(w0, 20, 5),
    }
}

impl Command {
    /// The opcode of a raw command.
    pub fn opcode(w0: u64) -> u8 {
        u8f(w0, 0, 8)
    }

    /// Decode a raw 16-byte command.
    pub fn decode(w: [u64; 2]) -> Result<Command, CmdError> {
        let [w0, w1] = w;
        let opc = Self::opcode(w0);
        let vmid = u16f(w0, 32);
        let asid = u16f(w0, 48);
        Ok(match opc {
            op::PREFETCH_CONFIG => Command::PrefetchConfig {
                sid: sid(w0),
                ssid: ssv(w0),
            },
            op::PREFETCH_ADDR => Command::PrefetchAddr {
                sid: sid(w0),
                ssid: ssv(w0),
                addr: w1 & !0xfff,
            },
            op::CFGI_STE => Command::CfgiSte {
                sid: sid(w0),
                leaf: field(w1, 0, 1) != 0,
            },
            op::CFGI_STE_RANGE => Command::CfgiSteRange {
                sid: sid(w0),
                range: u8f(w1, 0, 5),
            },
            op::CFGI_CD => Command::CfgiCd {
                sid: sid(w0),
                ssid: ssid(w0),
                leaf: field(w1, 0, 1) != 0,
            },
            op::CFGI_CD_ALL => Command::CfgiCdAll { sid: sid(w0) },
            op::CFGI_VMS_PIDM => Command::CfgiVmsPidm,
            op::TLBI_NH_ALL => Command::TlbiNhAll { vmid },
            op::TLBI_NH_ASID => Command::TlbiNhAsid { vmid, asid },
            op::TLBI_NH_VA => Command::TlbiNhVa {
                vmid,
                asid,
                addr: tlbi_addr(w0, w1, false),
            },
            op::TLBI_NH_VAA => Command::TlbiNhVaa {
                vmid,
                addr: tlbi_addr(w0, w1, false),
            },
            op::TLBI_EL3_ALL => Command::TlbiEl3All,
            op::TLBI_EL3_VA => Command::TlbiEl3Va,
            op::TLBI_EL2_ALL => Command::TlbiEl2All,
            op::TLBI_EL2_ASID => Command::TlbiEl2Asid { asid },
            op::TLBI_EL2_VA => Command::TlbiEl2Va {
                asid,
                addr: tlbi_addr(w0, w1, false),
            },
            op::TLBI_EL2_VAA => Command::TlbiEl2Vaa {
                addr: tlbi_addr(w0, w1, false),
            },
            op::TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid },
            op::TLBI_S2_IPA => Command::TlbiS2Ipa {
                vmid,
                addr: tlbi_addr(w0, w1, true),
            },
            op::TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            op::ATC_INV => Command::AtcInv {
                sid: sid(w0),
                ssid: ssv(w0),
                addr: w1 & !0xfff,
                size: u8f(w1, 0, 6),
                global: field(w0, 9, 1) != 0,
            },
            op::PRI_RESP => {
                let resp = u8f(w1, 12, 2);
                if resp == 3 {
                    return Err(CmdError::Reserved(opc));
                }
                Command::PriResp {
                    sid: sid(w0),
                    ssid: ssv(w0),
                    grpid: u16::try_from(field(w1, 0, 9)).unwrap_or(0),
                    resp,
                }
            }
            op::RESUME => Command::Resume {
                sid: sid(w0),
                stag: u16f(w1, 0),
                retry: field(w0, 12, 1) != 0,
                abort: field(w0, 13, 1) != 0,
            },
            op::STALL_TERM => Command::StallTerm { sid: sid(w0) },
            op::SYNC => {
                let cs = u8f(w0, 12, 2);
                if cs == 3 {
                    return Err(CmdError::Reserved(opc));
                }
                Command::Sync {
                    cs,
                    msi_data: u32::try_from(field(w0, 32, 32)).unwrap_or(0),
                    msi_addr: w1 & (((1u64 << 52) - 1) & !0x3),
                }
            }
            other => return Err(CmdError::UnknownOpcode(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 4.7.3: CMD_SYNC fields as Linux builds them (CS=IRQ, MSIData 0).
    #[test]
    fn cmd_sync_decodes_msi_fields() {
        let w0 = 0x46 | (1 << 12) | (3 << 22) | (0xf << 24);
        let c = Command::decode([w0, 0x8_1234_5670]).unwrap();
        assert_eq!(
            c,
            Command::Sync {
                cs: 1,
                msi_data: 0,
                msi_addr: 0x8_1234_5670
            }
        );
        assert_eq!(
            Command::decode([0x46 | (3 << 12), 0]),
            Err(CmdError::Reserved(0x46))
        );
    }

    // 4.1.3: unknown opcodes are CERROR_ILL.
    #[test]
    fn cmd_unknown_opcode_is_error() {
        assert_eq!(
            Command::decode([0x47, 0]),
            Err(CmdError::UnknownOpcode(0x47))
        );
        assert_eq!(Command::decode([0, 0]), Err(CmdError::UnknownOpcode(0)));
    }

    // 4.4.1: range = (NUM+1) * 2^SCALE granules when RIL.
    #[test]
    fn tlbi_range_uses_num_scale_tg_only_with_ril() {
        let w0 = 0x12 | (3 << 12) | (1 << 20) | (5u64 << 32) | (9u64 << 48);
        let w1 = 0x4000_0000 | (1 << 10) | 1;
        let Command::TlbiNhVa { vmid, asid, addr } = Command::decode([w0, w1]).unwrap() else {
            panic!()
        };
        assert_eq!((vmid, asid, addr.leaf), (5, 9, true));
        assert_eq!(addr.range(true), 0x4000_0000..0x4000_0000 + 8 * 4096);
        assert_eq!(addr.range(false), 0x4000_0000..0x4000_0001);
    }

    // 4.7.1: CMD_RESUME as Linux's arm_smmu_page_response builds it
    // (RESP at [13:12]: 1 = RETRY, 2 = ABORT; STAG in word 1).
    #[test]
    fn cmd_resume_decodes_action_and_stag() {
        let c = Command::decode([0x44 | (1 << 12) | (0x108u64 << 32), 0x1234]).unwrap();
        assert_eq!(
            c,
            Command::Resume {
                sid: 0x108,
                stag: 0x1234,
                retry: true,
                abort: false
            }
        );
        let c = Command::decode([0x44 | (2 << 12) | (7u64 << 32), 3]).unwrap();
        assert_eq!(
            c,
            Command::Resume {
                sid: 7,
                stag: 3,
                retry: false,
                abort: true
            }
        );
        assert_eq!(
            Command::decode([0x45 | (9u64 << 32), 0]).unwrap(),
            Command::StallTerm { sid: 9 }
        );
    }

    #[test]
    fn cmd_cfgi_and_pri_resp_fields() {
        let c = Command::decode([0x05 | (7 << 12) | (0x100u64 << 32), 1]).unwrap();
        assert_eq!(
            c,
            Command::CfgiCd {
                sid: 0x100,
                ssid: 7,
                leaf: true
            }
        );
        let c = Command::decode([
            0x41 | (1 << 11) | (3 << 12) | (8u64 << 32),
            0x1ff | (2 << 12),
        ])
        .unwrap();
        assert_eq!(
            c,
            Command::PriResp {
                sid: 8,
                ssid: Some(3),
                grpid: 0x1ff,
                resp: 2
            }
        );
    }
}
