//! Modelled cycles of a fixed, mixed translation sequence: stage 1 with and
//! without SubstreamIDs, stage 2, nested; TLB hits and misses, config-cache
//! misses, permission and translation faults, bad SubstreamIDs, and
//! invalidation commands in between (IHI 0070 4.3, 4.4). Every translation
//! must cost what the latency table says for the structures it touched.
//!
//! The host-speed work on the translation path must not change any of
//! this: `SMMU_CYCLES_DUMP=1 cargo test -p smmu-model --test
//! modelled_cycles -- --nocapture` prints every result and the final
//! statistics, to diff before and after a change.

mod support;

use iommu_emulator::{CachePath, Iommu, Latencies, Perm};
use support::*;

/// CMD_TLBI_NH_VA, NH_ASID, CFGI_CD, CFGI_STE, TLBI_S2_IPA, NSNH_ALL.
fn command(r: u64) -> [u64; 2] {
    let asid = u64::from(ASID_BASE) + (r >> 8) % 16;
    let page = (r >> 16) % PAGES;
    match (r >> 4) % 6 {
        0 => [0x12 | (asid << 48), (VA + (page << 12)) | 1],
        1 => [0x11 | (asid << 48), 0],
        2 => [
            0x05 | (u64::from(SID_S1_SSID) << 32) | (((r >> 8) % 16) << 12),
            1,
        ],
        3 => [0x03 | (((r >> 8) % 4) << 32), 1],
        4 => [0x2a | (((r >> 8) % 2 + 3) << 32), IPA_4K + (page << 12)],
        _ => [0x30, 0],
    }
}

/// Run the sequence on an SMMU with `props`; returns one line per step and
/// the final statistics, and checks every translation's cycles.
fn run(props: &str) -> (Vec<String>, smmu_model::SmmuStats) {
    let mut rig = Rig::new(props);
    let lat = Latencies::default();
    let mut lines = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for step in 0..6000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = x;
        if r % 100 < 2 {
            let c = command(r);
            rig.issue(&[c]);
            lines.push(format!("{step} cmd {c:x?}"));
            continue;
        }
        if step.is_multiple_of(50) {
            rig.drain_events();
        }
        let sid = u32::try_from((r >> 8) % 4).unwrap();
        let ssid = match sid {
            SID_S1_SSID | SID_NESTED if !(r >> 12).is_multiple_of(5) => {
                Some(u32::try_from((r >> 16) % 17).unwrap())
            }
            _ if (r >> 12).is_multiple_of(50) => Some(1),
            _ => None,
        };
        let page = if (r >> 24) % 10 < 7 {
            (r >> 32) % 8
        } else {
            (r >> 32) % (PAGES + 8)
        };
        let access = if (r >> 40).is_multiple_of(7) {
            Perm::W
        } else {
            Perm::R
        };
        let req = request(sid, ssid, page, access);
        let res = rig.smmu.translate(rig.ram.as_ref(), &req);
        if let Ok(t) = &res {
            // The cost of a TLB hit with both configuration caches hit:
            // STE cache, CD cache (streams with stage 1), TLB.
            let cd = if sid == SID_S2 { 0 } else { lat.pasid_hit };
            let cfg_hit = t.path.contains(CachePath::CONTEXT_HIT)
                && (sid == SID_S2 || t.path.contains(CachePath::PASID_HIT));
            if cfg_hit && t.path.contains(CachePath::IOTLB_HIT) {
                assert_eq!(
                    t.cycles.0,
                    lat.context_hit + cd + lat.iotlb_hit,
                    "{step}: {t:?}"
                );
                assert_eq!(t.walk_reads, 0, "{step}: {t:?}");
            }
            // A TLB miss: the same plus one memory read per descriptor.
            if cfg_hit && t.path.contains(CachePath::WALK) {
                let reads = u64::from(t.walk_reads);
                assert_eq!(
                    t.cycles.0,
                    lat.context_hit + cd + lat.iotlb_miss + reads * lat.mem_read,
                    "{step}: {t:?}"
                );
                let want = match sid {
                    SID_S1 | SID_S1_SSID => 4,
                    SID_S2 => 3,
                    // 4 stage-1 descriptors, each through a 3-level stage-2
                    // walk except where the 2M blocks make it 2, then the
                    // final IPA's 3-level walk.
                    _ => u64::from(t.walk_reads),
                };
                assert_eq!(reads, want, "{step}: {t:?}");
            }
        }
        lines.push(format!("{step} {res:?}"));
    }
    (lines, rig.smmu.stats())
}

fn dump(props: &str, lines: &[String], st: &smmu_model::SmmuStats) {
    if std::env::var_os("SMMU_CYCLES_DUMP").is_some() {
        println!("== {props}");
        for l in lines {
            println!("{l}");
        }
        println!("{st:?}");
    }
}

// Every TLB hit and every walk of the mixed sequence costs what the
// latency table says (IHI 0070 3.17 TLB, 3.3 configuration caches), and the
// sequence really reaches hits, walks, faults and invalidations.
#[test]
fn translate_mixed_sequence_cycles_follow_latency_table() {
    let props = "";
    let (lines, st) = run(props);
    dump(props, &lines, &st);
    assert!(st.tlb.hits > 2000, "{st}");
    assert!(st.tlb.misses > 300, "{st}");
    assert!(st.tlb.invalidated > 0, "{st}");
    assert!(st.total.faults > 100, "{st}");
    assert!(st.cd_cache.misses > 16, "{st}");
}

// The same with small caches: evictions in the TLB and the configuration
// caches, so config fetches (and their reads) show up too.
#[test]
fn translate_mixed_sequence_small_caches_cycles_follow_latency_table() {
    let props =
        "tlb-sets=4,tlb-ways=2,ste-cache-sets=1,ste-cache-ways=2,cd-cache-sets=2,cd-cache-ways=2";
    let (lines, st) = run(props);
    dump(props, &lines, &st);
    assert!(st.tlb.evictions > 100, "{st}");
    assert!(st.ste_cache.evictions > 100, "{st}");
    assert!(st.cd_cache.evictions > 100, "{st}");
}
