//! Conformance: page requests (VT-d 7.4, 7.5, registers 11.4.11) driven as
//! Linux 6.1/6.12 drives them (intel_svm_enable_prq / intel_iommu_enable_prq,
//! prq_event_thread, intel_svm_page_response / intel_iommu_page_response,
//! intel_drain_pasid_prq): the PRQ set up with PQH = PQT = 0 and PQA with the
//! queue order, a page-request MSI, the handler that clears PPR, reads from
//! PQH to PQT, answers each last-in-group request with a page group
//! response descriptor (QI type 9) and writes PQH = tail, then clears PRO
//! once the queue is empty.

mod vtd_support;

use std::sync::{Arc, Mutex};

use iommu_emulator::SourceId;
use iommu_emulator::endpoint::{AtcInvalidation, EndpointPort, PageResponse};
use iommu_emulator::{Gpa, GuestRam, Pasid, PasidTag};
use vtd_model::prq::{PRS_PPR, PRS_PRO, RESP_INVALID, RESP_SUCCESS};
use vtd_model::regs::*;
use vtd_model::{PageRequest, PageRequestOutcome};
use vtd_support::*;

const PROPS: &str = "x-scalable-mode=on,aw-bits=48,x-prs=on,device-iotlb=on,x-pasid-mode=on";
const PASIDE: u64 = 1 << 3;
const DTE: u64 = 1 << 2;
const PRE: u64 = 1 << 4;
const PE_DATA: u32 = 0x4043;

#[derive(Default)]
struct Device {
    invs: Mutex<Vec<AtcInvalidation>>,
    resps: Mutex<Vec<PageResponse>>,
}

impl EndpointPort for Device {
    fn invalidate_atc(&self, inv: &AtcInvalidation) {
        self.invs.lock().unwrap().push(*inv);
    }
    fn page_response(&self, resp: &PageResponse) {
        self.resps.lock().unwrap().push(*resp);
    }
}

struct Prq {
    base: u64,
    bytes: u64,
}

/// Linux: allocate the queue (order pages), request the PRQ interrupt
/// (PEDATA/PEADDR/PEUADDR, then unmask PECTL), PQH = PQT = 0, PQA.
fn enable_prq(d: &Driver, order: u64) -> Prq {
    let base = d.alloc(1 << order);
    d.wr32(PEDATA, PE_DATA);
    d.wr32(PEADDR, FE_ADDR);
    d.wr32(PEUADDR, 0);
    d.wr32(PECTL, 0);
    d.wr64(PQH, 0);
    d.wr64(PQT, 0);
    d.wr64(PQA, base | order);
    Prq {
        base,
        bytes: 4096 << order,
    }
}

fn req(r: iommu_emulator::Rid, pasid: u32, addr: u64, lpig: bool, prgi: u16) -> PageRequest {
    PageRequest {
        rid: r,
        pasid: Some(PasidTag {
            pasid: Pasid::new(pasid).unwrap(),
            privileged: false,
            exec: false,
        }),
        addr,
        read: true,
        write: true,
        lpig,
        prg_index: prgi,
        private_data: None,
    }
}

/// Linux's page_req_dsc fields of one queued descriptor.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Seen {
    rid: u16,
    pasid: Option<u32>,
    addr: u64,
    rd: bool,
    wr: bool,
    lpig: bool,
    prgi: u16,
    pdp: bool,
}

/// prq_event_thread(): clear PPR, read PQH..PQT, respond to LPIG/PDP
/// requests with a page group response (Success), advance PQH, clear PRO
/// when the queue is empty.
fn prq_handler(d: &mut Driver, q: &Prq, code: u8) -> Vec<Seen> {
    d.wr32(PRS, PRS_PPR as u32);
    let tail = d.rd64(PQT) & 0x7ffe0;
    let mut head = d.rd64(PQH) & 0x7ffe0;
    let mut out = Vec::new();
    while head != tail {
        let a = q.base + head;
        let lo = d.ram.read_u64(Gpa(a)).unwrap();
        let hi = d.ram.read_u64(Gpa(a + 8)).unwrap();
        assert_eq!(lo & 0xff, 1, "page request descriptor type");
        let s = Seen {
            rid: (lo >> 16) as u16,
            pasid: (lo & (1 << 8) != 0).then_some(((lo >> 32) & 0xf_ffff) as u32),
            addr: hi & !0xfff,
            rd: hi & 1 != 0,
            wr: hi & 2 != 0,
            lpig: hi & 4 != 0,
            prgi: ((hi >> 3) & 0x1ff) as u16,
            pdp: lo & (1 << 9) != 0,
        };
        if s.lpig || s.pdp {
            let qw0 = 9
                | (u64::from(s.pasid.is_some()) << 4)
                | (u64::from(s.pdp) << 5)
                | (u64::from(code) << 12)
                | (u64::from(s.rid) << 16)
                | (u64::from(s.pasid.unwrap_or(0)) << 32);
            let qw1 = (u64::from(s.prgi) << 3) | (u64::from(s.lpig) << 2);
            d.qi_submit(&[[qw0, qw1]]);
        }
        out.push(s);
        head = (head + 32) % q.bytes;
    }
    d.wr64(PQH, tail);
    if d.rd32(PRS) & PRS_PRO as u32 != 0 && d.rd64(PQH) == d.rd64(PQT) {
        d.wr32(PRS, PRS_PRO as u32);
    }
    out
}

fn pe_msis(d: &Driver) -> usize {
    d.msi.take().iter().filter(|m| m.data == PE_DATA).count()
}

fn setup() -> (Driver, Arc<Device>, iommu_emulator::Rid) {
    let mut d = Driver::probe(PROPS);
    assert_ne!(d.ecap & (1 << 29), 0, "ECAP.PRS");
    let dev = Arc::new(Device::default());
    d.vtd.set_device_notifier(dev.clone());
    let r = rid(0, 3, 0);
    d.set_context_sm(r, PASIDE | DTE | PRE);
    d.flush_context_global();
    (d, dev, r)
}

// VT-d 7.5.1.1 + 11.4.11: a queued request lands at PQT as Linux decodes
// it, PQT advances, PPR is set with a page request event; the response
// software queues (6.5.2.10) reaches the device with PRG index, code, PASID.
#[test]
fn prq_request_queued_event_and_response_reach_device() {
    let (mut d, dev, r) = setup();
    let q = enable_prq(&d, 0);
    d.msi.take();
    let out = d
        .vtd
        .page_request(d.ram.as_ref(), &req(r, 7, 0x7fff_1234_5678, true, 0x15));
    assert_eq!(out, PageRequestOutcome::Queued);
    assert_eq!(d.rd64(PQT), 32);
    assert_eq!(d.rd32(PRS) & PRS_PPR as u32, PRS_PPR as u32);
    assert_eq!(pe_msis(&d), 1);
    // Second request while PPR is set: no new interrupt condition.
    let out = d
        .vtd
        .page_request(d.ram.as_ref(), &req(r, 7, 0x8000, false, 0x16));
    assert_eq!(out, PageRequestOutcome::Queued);
    assert_eq!(pe_msis(&d), 0);
    let seen = prq_handler(&mut d, &q, RESP_SUCCESS);
    assert_eq!(
        seen,
        vec![
            Seen {
                rid: r.0,
                pasid: Some(7),
                addr: 0x7fff_1234_5000,
                rd: true,
                wr: true,
                lpig: true,
                prgi: 0x15,
                pdp: false
            },
            Seen {
                rid: r.0,
                pasid: Some(7),
                addr: 0x8000,
                rd: true,
                wr: true,
                lpig: false,
                prgi: 0x16,
                pdp: false
            }
        ]
    );
    let resps = dev.resps.lock().unwrap().clone();
    assert_eq!(resps.len(), 1);
    assert_eq!(
        (
            resps[0].source,
            resps[0].pasid,
            resps[0].group,
            resps[0].code.pcie(),
            resps[0].automatic
        ),
        (SourceId::Pci(r), Some(7), 0x15, RESP_SUCCESS, false)
    );
    assert_eq!(d.rd32(PRS), 0);
    assert_eq!(d.rd64(PQH), 64);
    let s = d.vtd.prq_stats();
    assert_eq!((s.received, s.queued, s.events), (2, 2, 1));
}

// 7.5.1.1: private data is queued (PDP, QW2/QW3) and the request needs a
// response even without LPIG.
#[test]
fn prq_private_data_is_queued_and_answered() {
    let (mut d, dev, r) = setup();
    let q = enable_prq(&d, 0);
    let mut p = req(r, 9, 0x4000, false, 3);
    p.private_data = Some([0x1111, 0x2222]);
    assert_eq!(
        d.vtd.page_request(d.ram.as_ref(), &p),
        PageRequestOutcome::Queued
    );
    assert_eq!(d.ram.read_u64(Gpa(q.base + 16)).unwrap(), 0x1111);
    assert_eq!(d.ram.read_u64(Gpa(q.base + 24)).unwrap(), 0x2222);
    let seen = prq_handler(&mut d, &q, RESP_SUCCESS);
    assert!(seen[0].pdp);
    assert_eq!(dev.resps.lock().unwrap().len(), 1);
}

// 7.5.1 / 11.4.11.4: with the queue full the request is not queued, PRO is
// set (one event), the last request of a group is answered by the hardware
// (Success, so the device retries) and others are dropped, all counted;
// once Linux has drained the queue and cleared PRO, requests queue again.
#[test]
fn prq_overflow_sets_pro_and_auto_responds_last_in_group() {
    let (mut d, _dev, r) = setup();
    let q = enable_prq(&d, 0); // 128 descriptors: 127 fit
    d.msi.take();
    for i in 0..127u16 {
        assert_eq!(
            d.vtd
                .page_request(d.ram.as_ref(), &req(r, 1, u64::from(i) << 12, false, i)),
            PageRequestOutcome::Queued,
            "request {i}"
        );
    }
    assert_eq!(pe_msis(&d), 1);
    // Linux has not run yet: PPR still set, so PRO is no new condition.
    let out = d
        .vtd
        .page_request(d.ram.as_ref(), &req(r, 1, 0x100_0000, true, 200));
    let PageRequestOutcome::AutoResponded(resp) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        (resp.rid, resp.pasid, resp.prg_index, resp.code, resp.lpig),
        (r, Some(1), 200, RESP_SUCCESS, true)
    );
    assert_ne!(d.rd32(PRS) & PRS_PRO as u32, 0);
    assert_eq!(
        d.vtd
            .page_request(d.ram.as_ref(), &req(r, 1, 0x200_0000, false, 201)),
        PageRequestOutcome::Dropped
    );
    assert_eq!(d.rd64(PQT), 127 * 32);
    let s = d.vtd.prq_stats();
    assert_eq!((s.overflow_auto_responded, s.overflow_dropped), (1, 1));
    // PRO stays set while requests keep arriving, even with room.
    let seen = prq_handler(&mut d, &q, RESP_SUCCESS);
    assert_eq!(seen.len(), 127);
    assert_eq!(d.rd32(PRS), 0, "handler cleared PPR and PRO");
    assert_eq!(
        d.vtd
            .page_request(d.ram.as_ref(), &req(r, 1, 0x100_0000, true, 200)),
        PageRequestOutcome::Queued
    );
    assert_eq!(pe_msis(&d), 1);
}

// 11.4.11.4/5: PRO set while no PPR was pending is an interrupt condition.
#[test]
fn prq_overflow_without_pending_raises_event() {
    let (mut d, _dev, r) = setup();
    let q = enable_prq(&d, 0);
    for i in 0..127u16 {
        d.vtd.page_request(d.ram.as_ref(), &req(r, 1, 0, false, i));
    }
    // Software clears PPR but has not consumed the queue yet.
    d.wr32(PRS, PRS_PPR as u32);
    d.msi.take();
    d.vtd.page_request(d.ram.as_ref(), &req(r, 1, 0, true, 1));
    assert_eq!(d.rd32(PRS), PRS_PRO as u32);
    assert_eq!(pe_msis(&d), 1);
    prq_handler(&mut d, &q, RESP_SUCCESS);
    assert_eq!(d.rd32(PRS), 0);
}

// 11.4.11.5: a masked event sets IP; unmasking delivers it; clearing PPR
// with IP set withdraws it.
#[test]
fn prq_masked_event_sets_ip_and_unmask_delivers() {
    let (d, _dev, r) = setup();
    enable_prq(&d, 0);
    d.wr32(PECTL, ECTL_IM as u32);
    d.msi.take();
    d.vtd.page_request(d.ram.as_ref(), &req(r, 1, 0, true, 1));
    assert_eq!(pe_msis(&d), 0);
    assert_eq!(d.rd32(PECTL), (ECTL_IM | ECTL_IP) as u32);
    d.wr32(PECTL, 0);
    assert_eq!(pe_msis(&d), 1);
    assert_eq!(d.rd32(PECTL), 0);
    // Masked again, new condition, then software clears PPR: IP withdrawn.
    d.wr32(PRS, PRS_PPR as u32);
    d.wr32(PECTL, ECTL_IM as u32);
    d.vtd.page_request(d.ram.as_ref(), &req(r, 1, 0, true, 2));
    assert_ne!(d.rd32(PECTL) & ECTL_IP as u32, 0);
    d.wr32(PRS, PRS_PPR as u32);
    assert_eq!(d.rd32(PECTL), ECTL_IM as u32);
}

// 7.4: a context entry without PRE (or a unit without translation) gets
// Invalid Request from the hardware; nothing is queued.
#[test]
fn prq_pre_clear_gets_invalid_request() {
    let (mut d, _dev, _) = setup();
    enable_prq(&d, 0);
    let other = rid(0, 4, 0);
    d.set_context_sm(other, PASIDE);
    let out = d
        .vtd
        .page_request(d.ram.as_ref(), &req(other, 1, 0, true, 4));
    let PageRequestOutcome::Rejected(Some(resp)) = out else {
        panic!("{out:?}")
    };
    assert_eq!((resp.code, resp.prg_index), (RESP_INVALID, 4));
    assert_eq!(
        d.vtd
            .page_request(d.ram.as_ref(), &req(other, 1, 0, false, 4)),
        PageRequestOutcome::Rejected(None)
    );
    assert_eq!(d.rd64(PQT), 0);
    assert_eq!(d.vtd.prq_stats().rejected, 2);
}

// 7.4: without ECAP.PRS page requests are refused.
#[test]
fn prq_without_prs_capability_rejected() {
    let d = Driver::probe("x-scalable-mode=on,aw-bits=48");
    assert_eq!(d.ecap & (1 << 29), 0);
    let out = d
        .vtd
        .page_request(d.ram.as_ref(), &req(rid(0, 3, 0), 1, 0, true, 1));
    assert!(matches!(out, PageRequestOutcome::Rejected(Some(_))));
}

// 6.5.2.8 + Linux intel_drain_pasid_prq(): a wait descriptor with fence and
// PD, followed by PASID-IOTLB and PASID device-TLB invalidations, completes
// after every earlier page request is in the queue, and the device-TLB
// invalidation reaches the device before the next wait completes.
#[test]
fn prq_drain_wait_completes_with_requests_queued() {
    let (mut d, dev, r) = setup();
    let q = enable_prq(&d, 0);
    d.vtd
        .page_request(d.ram.as_ref(), &req(r, 5, 0x3000, true, 9));
    let st = d.alloc(1);
    d.ram.write_u32(Gpa(st), 0).unwrap();
    let drain = [5 | (1 << 5) | (1 << 6) | (1 << 7) | (1u64 << 32), st];
    let piotlb = desc_piotlb(1, 5, None);
    let pdevtlb = [
        8 | (u64::from(r.0) << 16) | (5u64 << 32),
        ((1u64 << 63) - 1) & !0xfff | (1 << 11),
    ];
    d.qi_submit(&[drain, piotlb, pdevtlb]);
    assert_eq!(d.ram.read_u32(Gpa(st)).unwrap(), 1);
    assert_eq!(d.rd64(PQT), 32, "request queued before the drain completed");
    assert_eq!(d.vtd.prq_stats().drains, 1);
    let invs = dev.invs.lock().unwrap().clone();
    assert_eq!((invs.len(), invs[0].pasid), (1, Some(5)));
    prq_handler(&mut d, &q, RESP_SUCCESS);
}

// 7.5.1: a queue outside guest RAM: the request is answered with Response
// Failure and counted, never written elsewhere.
#[test]
fn prq_queue_outside_ram_fails_request() {
    let (d, _dev, r) = setup();
    d.wr64(PQA, 0xffff_ffff_f000);
    let out = d.vtd.page_request(d.ram.as_ref(), &req(r, 1, 0, true, 1));
    let PageRequestOutcome::Rejected(Some(resp)) = out else {
        panic!("{out:?}")
    };
    assert_eq!(resp.code, vtd_model::prq::RESP_FAILURE);
    assert_eq!(d.vtd.prq_stats().write_failures, 1);
    assert_eq!(d.rd64(PQT), 0);
}
