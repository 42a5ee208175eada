//! Event records (IHI 0070 7.3) and PRI queue records (8.1).

use crate::regs::field;

/// Size of an event record in bytes.
pub const EVENT_BYTES: u64 = 32;
/// Size of a PRI queue record in bytes.
pub const PRI_BYTES: u64 = 16;

/// Event types (7.3, table 7-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// F_UUT 0x01: unsupported upstream transaction.
    FUut,
    /// C_BAD_STREAMID 0x02: StreamID out of range or no L2 stream table.
    CBadStreamId,
    /// F_STE_FETCH 0x03: external abort fetching an STE.
    FSteFetch,
    /// C_BAD_STE 0x04: the STE is ILLEGAL.
    CBadSte,
    /// F_BAD_ATS_TREQ 0x05: ATS translation request not allowed.
    FBadAtsTreq,
    /// F_STREAM_DISABLED 0x06: non-substream traffic disabled (S1DSS).
    FStreamDisabled,
    /// F_TRANSL_FORBIDDEN 0x07: translated transaction not allowed.
    FTranslForbidden,
    /// C_BAD_SUBSTREAMID 0x08: SubstreamID out of range or L1CD invalid.
    CBadSubstreamId,
    /// F_CD_FETCH 0x09: external abort fetching a CD.
    FCdFetch,
    /// C_BAD_CD 0x0A: the CD is ILLEGAL.
    CBadCd,
    /// F_WALK_EABT 0x0B: external abort on a table walk.
    FWalkEabt,
    /// F_TRANSLATION 0x10.
    FTranslation,
    /// F_ADDR_SIZE 0x11.
    FAddrSize,
    /// F_ACCESS 0x12.
    FAccess,
    /// F_PERMISSION 0x13.
    FPermission,
    /// F_TLB_CONFLICT 0x20.
    FTlbConflict,
    /// F_CFG_CONFLICT 0x21.
    FCfgConflict,
    /// E_PAGE_REQUEST 0x24.
    EPageRequest,
    /// F_VMS_FETCH 0x25.
    FVmsFetch,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 19] = [
        EventType::FUut,
        EventType::CBadStreamId,
        EventType::FSteFetch,
        EventType::CBadSte,
        EventType::FBadAtsTreq,
        EventType::FStreamDisabled,
        EventType::FTranslForbidden,
        EventType::CBadSubstreamId,
        EventType::FCdFetch,
        EventType::CBadCd,
        EventType::FWalkEabt,
        EventType::FTranslation,
        EventType::FAddrSize,
        EventType::FAccess,
        EventType::FPermission,
        EventType::FTlbConflict,
        EventType::FCfgConflict,
        EventType::EPageRequest,
        EventType::FVmsFetch,
    ];

    /// The spec's code.
    pub const fn code(self) -> u8 {
        match self {
            EventType::FUut => 0x01,
            EventType::CBadStreamId => 0x02,
            EventType::FSteFetch => 0x03,
            EventType::CBadSte => 0x04,
            EventType::FBadAtsTreq => 0x05,
            EventType::FStreamDisabled => 0x06,
            EventType::FTranslForbidden => 0x07,
            EventType::CBadSubstreamId => 0x08,
            EventType::FCdFetch => 0x09,
            EventType::CBadCd => 0x0a,
            EventType::FWalkEabt => 0x0b,
            EventType::FTranslation => 0x10,
            EventType::FAddrSize => 0x11,
            EventType::FAccess => 0x12,
            EventType::FPermission => 0x13,
            EventType::FTlbConflict => 0x20,
            EventType::FCfgConflict => 0x21,
            EventType::EPageRequest => 0x24,
            EventType::FVmsFetch => 0x25,
        }
    }

    /// The type of a code.
    pub fn from_code(code: u8) -> Option<EventType> {
        Self::ALL.iter().copied().find(|t| t.code() == code)
    }

    /// The spec's name.
    pub const fn name(self) -> &'static str {
        match self {
            EventType::FUut => "F_UUT",
            EventType::CBadStreamId => "C_BAD_STREAMID",
            EventType::FSteFetch => "F_STE_FETCH",
            EventType::CBadSte => "C_BAD_STE",
            EventType::FBadAtsTreq => "F_BAD_ATS_TREQ",
            EventType::FStreamDisabled => "F_STREAM_DISABLED",
            EventType::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            EventType::CBadSubstreamId => "C_BAD_SUBSTREAMID",
            EventType::FCdFetch => "F_CD_FETCH",
            EventType::CBadCd => "C_BAD_CD",
            EventType::FWalkEabt => "F_WALK_EABT",
            EventType::FTranslation => "F_TRANSLATION",
            EventType::FAddrSize => "F_ADDR_SIZE",
            EventType::FAccess => "F_ACCESS",
            EventType::FPermission => "F_PERMISSION",
            EventType::FTlbConflict => "F_TLB_CONFLICT",
            EventType::FCfgConflict => "F_CFG_CONFLICT",
            EventType::EPageRequest => "E_PAGE_REQUEST",
            EventType::FVmsFetch => "F_VMS_FETCH",
        }
    }

    /// Types whose record carries the translation-fault fields of 7.3.12
    /// (PnU, InD, RnW, S2, CLASS, InputAddr).
    const fn has_access_fields(self) -> bool {
        matches!(
            self,
            EventType::FBadAtsTreq
                | EventType::FTranslForbidden
                | EventType::FWalkEabt
                | EventType::FTranslation
                | EventType::FAddrSize
                | EventType::FAccess
                | EventType::FPermission
        )
    }

    /// Types whose record has the Stall and STAG fields (7.3.22: the four
    /// translation-related faults).
    pub const fn can_stall(self) -> bool {
        matches!(
            self,
            EventType::FTranslation
                | EventType::FAddrSize
                | EventType::FAccess
                | EventType::FPermission
        )
    }

    /// Types whose record carries a FetchAddr in word 3.
    const fn has_fetch_addr(self) -> bool {
        matches!(
            self,
            EventType::FSteFetch
                | EventType::FCdFetch
                | EventType::FWalkEabt
                | EventType::FVmsFetch
        )
    }
}

/// CLASS of a translation-related fault (7.3.12): what was being done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultClass {
    /// 0b00: fetching a CD (stage-2 fault on the CD's IPA).
    Cd,
    /// 0b01: fetching a translation table descriptor.
    Tt,
    /// 0b10: translating the input address itself.
    In,
}

/// An event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Type.
    pub kind: EventType,
    /// StreamID.
    pub sid: u32,
    /// SubstreamID, when the transaction had one (SSV).
    pub ssid: Option<u32>,
    /// Input address of the transaction.
    pub input_addr: u64,
    /// The IPA of a stage-2 fault.
    pub ipa: u64,
    /// The physical address of a failed fetch.
    pub fetch_addr: u64,
    /// PnU: privileged transaction.
    pub privileged: bool,
    /// InD: instruction fetch.
    pub instruction: bool,
    /// RnW: read (true) or write.
    pub read: bool,
    /// S2: the fault came from stage 2.
    pub s2: bool,
    /// CLASS.
    pub class: FaultClass,
    /// Stall: the transaction is stalled until CMD_RESUME or
    /// CMD_STALL_TERM (7.3.13-16; only for [`EventType::can_stall`]).
    pub stall: bool,
    /// STAG: the token identifying the stalled transaction (with Stall).
    pub stag: u16,
}

impl Event {
    /// A record of `kind` for `sid`/`ssid` with the other fields zero.
    pub fn new(kind: EventType, sid: u32, ssid: Option<u32>) -> Self {
        Event {
            kind,
            sid,
            ssid,
            input_addr: 0,
            ipa: 0,
            fetch_addr: 0,
            privileged: false,
            instruction: false,
            read: true,
            s2: false,
            class: FaultClass::In,
            stall: false,
            stag: 0,
        }
    }

    /// The 32-byte record (7.3: word 0 holds type, SSV, SubstreamID and
    /// StreamID for every type).
    pub fn encode(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        let mut w0 = u64::from(self.kind.code()) | (u64::from(self.sid) << 32);
        if let Some(ssid) = self.ssid {
            w0 |= (1 << 11) | (u64::from(ssid & 0xf_ffff) << 12);
        }
        let mut w1 = 0u64;
        let mut w2 = 0u64;
        let mut w3 = 0u64;
        if self.kind.has_access_fields() {
            let b = |c: bool, n: u32| if c { 1u64 << n } else { 0 };
            w1 |= b(self.privileged, 33) | b(self.instruction, 34) | b(self.read, 35);
            w1 |= b(self.s2, 39);
            let class = match self.class {
                FaultClass::Cd => 0u64,
                FaultClass::Tt => 1,
                FaultClass::In => 2,
            };
            w1 |= class << 40;
            // TTRnW: table walks read.
            w1 |= b(self.class == FaultClass::Tt, 44);
            if self.stall && self.kind.can_stall() {
                // Stall [31], STAG [15:0].
                w1 |= b(true, 31) | u64::from(self.stag);
            }
            w2 = self.input_addr;
            if self.s2 {
                w3 = self.ipa & (((1u64 << 52) - 1) & !0xfff);
            }
        }
        if self.kind.has_fetch_addr() {
            w3 = self.fetch_addr & (((1u64 << 52) - 1) & !0x7);
        }
        w[0] = w0;
        w[1] = w1;
        w[2] = w2;
        w[3] = w3;
        w
    }

    /// Decode a record (for tests and tools): `None` for unknown types.
    pub fn decode(w: &[u64; 4]) -> Option<Event> {
        let kind = EventType::from_code(u8::try_from(field(w[0], 0, 8)).ok()?)?;
        let ssid =
            (field(w[0], 11, 1) != 0).then(|| u32::try_from(field(w[0], 12, 20)).unwrap_or(0));
        let class = match field(w[1], 40, 2) {
            0 => FaultClass::Cd,
            1 => FaultClass::Tt,
            _ => FaultClass::In,
        };
        let s2 = field(w[1], 39, 1) != 0;
        Some(Event {
            kind,
            sid: u32::try_from(field(w[0], 32, 32)).unwrap_or(0),
            ssid,
            input_addr: w[2],
            ipa: if s2 && !kind.has_fetch_addr() {
                w[3]
            } else {
                0
            },
            fetch_addr: if kind.has_fetch_addr() { w[3] } else { 0 },
            privileged: field(w[1], 33, 1) != 0,
            instruction: field(w[1], 34, 1) != 0,
            read: field(w[1], 35, 1) != 0,
            s2,
            class,
            stall: kind.can_stall() && field(w[1], 31, 1) != 0,
            stag: if kind.can_stall() && field(w[1], 31, 1) != 0 {
                u16::try_from(field(w[1], 0, 16)).unwrap_or(0)
            } else {
                0
            },
        })
    }
}

/// A PCIe page request as the SMMU writes it to the PRI queue (8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// StreamID of the requester.
    pub sid: u32,
    /// PASID, when the request had one.
    pub ssid: Option<u32>,
    /// Page address (bits \[63:12\]).
    pub addr: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute requested.
    pub exec: bool,
    /// Privileged.
    pub privileged: bool,
    /// Last request of its Page Request Group.
    pub last: bool,
    /// Page Request Group index (9 bits).
    pub prg_index: u16,
}

impl PageRequest {
    /// The 16-byte PRI queue record (8.1).
    pub fn encode(&self) -> [u64; 2] {
        let b = |c: bool, n: u32| if c { 1u64 << n } else { 0 };
        let mut w0 = u64::from(self.sid);
        if let Some(ssid) = self.ssid {
            w0 |= (u64::from(ssid & 0xf_ffff) << 32) | b(true, 63);
        }
        w0 |= b(self.privileged, 58) | b(self.exec, 59) | b(self.read, 60) | b(self.write, 61);
        w0 |= b(self.last, 62);
        let w1 = u64::from(self.prg_index & 0x1ff) | (self.addr & !0xfff);
        [w0, w1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 7.3.12: F_TRANSLATION with SSV, RnW, CLASS=IN and the input address.
    #[test]
    fn event_translation_fault_encodes_linux_fields() {
        let mut e = Event::new(EventType::FTranslation, 0x0108, Some(5));
        e.input_addr = 0xdead_b000;
        e.read = false;
        let w = e.encode();
        assert_eq!(w[0], 0x10 | (1 << 11) | (5 << 12) | (0x108u64 << 32));
        assert_eq!(w[1], 2u64 << 40);
        assert_eq!(w[2], 0xdead_b000);
        assert_eq!(Event::decode(&w), Some(e));
    }

    #[test]
    fn event_stage2_fault_carries_ipa_and_fetch_addr_types_fetch_addr() {
        let mut e = Event::new(EventType::FPermission, 1, None);
        e.s2 = true;
        e.ipa = 0x1234_5678;
        assert_eq!(e.encode()[3], 0x1234_5000);
        assert_ne!(e.encode()[1] & (1 << 39), 0);
        let mut f = Event::new(EventType::FCdFetch, 1, Some(2));
        f.fetch_addr = 0x8_0000_0040;
        assert_eq!(f.encode()[3], 0x8_0000_0040);
        assert_eq!(f.encode()[2], 0);
    }

    // 7.3.13: a stalled F_TRANSLATION carries Stall and STAG in word 1
    // (where Linux's EVTQ_1_STALL / EVTQ_1_STAG read them).
    #[test]
    fn event_stall_fields_encode_and_round_trip() {
        let mut e = Event::new(EventType::FTranslation, 9, Some(1));
        e.stall = true;
        e.stag = 0xbeef;
        let w = e.encode();
        assert_eq!(w[1] & 0xffff, 0xbeef);
        assert_ne!(w[1] & (1 << 31), 0);
        assert_eq!(Event::decode(&w), Some(e));
        // Other types have no Stall field.
        let mut c = Event::new(EventType::CBadCd, 9, None);
        c.stall = true;
        c.stag = 5;
        assert_eq!(c.encode()[1], 0);
    }

    #[test]
    fn event_codes_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_code(t.code()), Some(t));
        }
        assert_eq!(EventType::from_code(0x55), None);
    }

    // 8.1: PRI record layout as Linux reads it.
    #[test]
    fn page_request_encodes_priq_record() {
        let r = PageRequest {
            sid: 0x10,
            ssid: Some(3),
            addr: 0x7000_1000,
            read: true,
            write: true,
            exec: false,
            privileged: false,
            last: true,
            prg_index: 0x42,
        };
        let [w0, w1] = r.encode();
        assert_eq!(
            w0,
            0x10 | (3 << 32) | (1 << 60) | (1 << 61) | (1 << 62) | (1 << 63)
        );
        assert_eq!(w1, 0x7000_1000 | 0x42);
    }
}
