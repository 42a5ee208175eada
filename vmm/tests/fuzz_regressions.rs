//! The device-layer fuzz target's inputs as tests: every input `cargo fuzz run devices` found
//! (crash, timeout, broken invariant) is listed in [`FOUND`] as hex (regenerate one with
//! `xxd -p <artifact> | tr -d '\n'`) and replayed through the same decoder and invariants
//! (`iommu_vmm::fuzzing`); hand-written seeds below drive each region and check what the guest
//! would see.

use iommu_vmm::arch::x86_64::layout;
use iommu_vmm::fuzzing::{self, Op, PASID_BAR, RunReport, addrs, disk_bar, encode};
use vm_memory::{Bytes, GuestAddress};

/// Inputs the fuzzer found, each with what it broke and the fix.
const FOUND: &[(&str, &str)] = &[
    // A VT-d fault event with FEADDR = 0xa2a2a2a0 (written by the guest) was injected as an
    // MSI. Fix: device_manager.rs DirectMsiFilter drops and counts the unit's own messages
    // outside 0xFEEx_xxxx.
    (
        "crash-959de0b06cdfea105164f4dafcb00bc4241e83b3",
        "0022017a09060102a2a23aaaa2a2a2a2a2a2a2a22ba2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a23a5e56a2a2a2a2aaa2a200000ba52aa2a2a2a2a2a2a2a2a22aa2a2a2a2a2a2ff0000",
    ),
];

/// Bytes of a saved input: hex text, whitespace ignored.
fn decode_hex(name: &str, text: &str) -> Vec<u8> {
    iommu_emulator::fuzz::decode_hex(name, text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn fuzz_regressions_replay_every_found_input() {
    let mut replayed = 0;
    for (name, hex) in FOUND {
        let data = decode_hex(name, hex);
        if let Err(v) = fuzzing::run(&data) {
            panic!("{name}: {v:?}");
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no saved input replayed");
    assert_eq!(replayed, FOUND.len(), "every listed input replayed");
}

/// Runs a seed. With `FUZZ_SEED_DIR` set, the seed is also written there under the test's name
/// (`FUZZ_SEED_DIR=vmm/fuzz/corpus/devices cargo test --test fuzz_regressions` seeds the
/// fuzzer's corpus).
fn run(data: &[u8]) -> (fuzzing::FuzzMachine, RunReport) {
    if let Some(dir) = std::env::var_os("FUZZ_SEED_DIR") {
        let name = std::thread::current()
            .name()
            .unwrap_or("seed")
            .replace("::", "-");
        std::fs::write(std::path::Path::new(&dir).join(name), data).unwrap();
    }
    match fuzzing::run_machine(data) {
        Ok(m) => m,
        Err(v) => panic!("invariant broken: {v:?}"),
    }
}

fn le(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Legacy mode, no interrupt remapping, translation off.
const LEGACY: u8 = 0;
/// Legacy mode with interrupt remapping.
const LEGACY_IR: u8 = 2;
/// Scalable mode, device-TLB and page requests.
const SCALABLE_ATS_PRS: u8 = 1 | 4 | 8;

fn virtio_init(disk: u8) -> Vec<u8> {
    // features: all offered low bits; size: the device's (256).
    le(&[&[disk], &u32::MAX.to_le_bytes(), &0u16.to_le_bytes()])
}

fn virtio_request(disk: u8, rtype: u8, sector: u16, len: u16) -> Vec<u8> {
    le(&[
        &[disk, rtype],
        &sector.to_le_bytes(),
        &len.to_le_bytes(),
        &[0],
    ])
}

fn status_byte(m: &fuzzing::FuzzMachine, disk: u64, slot: u64) -> u8 {
    m.mem()
        .read_obj(GuestAddress(
            addrs::VQ + disk * addrs::VQ_STRIDE + 0x6000 + slot,
        ))
        .unwrap()
}

// Virtio 1.2 §5.2.6: a read request completes with VIRTIO_BLK_S_OK and the sector's data.
#[test]
fn seed_virtio_blk_read_completes_with_the_sector_data() {
    let init = virtio_init(0);
    let req = virtio_request(0, 0, 3, 512);
    let (m, r) = run(&encode(
        LEGACY,
        &[(Op::VirtioInit, &init), (Op::VirtioRequest, &req)],
    ));
    assert_eq!(r.virtio_used[0], 1, "one used entry: {r:?}");
    assert_eq!(status_byte(&m, 0, 0), 0, "VIRTIO_BLK_S_OK");
    let mut data = [0u8; 512];
    m.mem()
        .read_slice(&mut data, GuestAddress(addrs::VQ + 0x8000))
        .unwrap();
    assert!(
        data.iter().all(|&b| b == 3),
        "disk content is the sector number"
    );
    assert!(
        r.stats.contains("virtio-blk 0: 1 reads (512 bytes)"),
        "{}",
        r.stats
    );
}

// §5.2.6.2: a write to a read-only disk fails (VIRTIO_BLK_S_IOERR); the other disk takes it.
#[test]
fn seed_virtio_blk_write_refused_on_readonly_disk_only() {
    let (m, r) = run(&encode(
        LEGACY,
        &[
            (Op::VirtioInit, &virtio_init(0)),
            (Op::VirtioInit, &virtio_init(1)),
            (Op::VirtioRequest, &virtio_request(0, 2, 1, 512)),
            (Op::VirtioRequest, &virtio_request(1, 2, 1, 512)),
        ],
    ));
    assert_eq!(r.virtio_used, vec![1, 1], "{r:?}");
    assert_eq!(status_byte(&m, 0, 0), 1, "read-only disk: IOERR");
    assert_eq!(status_byte(&m, 1, 0), 0, "writable disk: OK");
}

// Virtio 1.2 §2.7.13.3 and the notify bound: an avail index far ahead sets DEVICE_NEEDS_RESET.
#[test]
fn seed_virtio_invalid_avail_index_sets_needs_reset() {
    let (_, r) = run(&encode(
        LEGACY,
        &[
            (Op::VirtioInit, &virtio_init(1)),
            (Op::VirtioKick, &le(&[&[1], &300u16.to_le_bytes()])),
        ],
    ));
    assert_eq!(r.virtio_faults[1].0, 1, "{r:?}");
    assert_ne!(r.virtio_status[1] & 0x40, 0, "DEVICE_NEEDS_RESET");
    assert_eq!(r.virtio_used[1], 0);
}

// VT-d 7.2: with translation on and no root entry for the disk, its DMA faults; the fault is
// recorded (FSTS.PPF, a fault record) and the fault event goes to FEADDR (0xfee00000).
#[test]
fn seed_vtd_translation_fault_recorded_and_signalled() {
    let (m, r) = run(&encode(
        LEGACY,
        &[
            (Op::VtdEnable, &[1]),
            (Op::VirtioInit, &virtio_init(0)),
            (Op::VirtioRequest, &virtio_request(0, 0, 0, 16)),
        ],
    ));
    assert_ne!(r.vtd_gsts & (1 << 31), 0, "GSTS.TES: {r:?}");
    assert!(r.vtd_fault_records >= 1, "{r:?}");
    assert_ne!(r.vtd_fsts & 2, 0, "FSTS.PPF");
    assert!(r.direct_msis >= 1, "fault event raised: {r:?}");
    assert_eq!(
        status_byte(&m, 0, 0),
        0xff,
        "the device never got to the request"
    );
}

// VT-d 3.6 (legacy second-level translation): root -> context -> 3-level table -> the disk's
// ring pages mapped 1:1; a request completes through the IOMMU.
#[test]
fn seed_vtd_legacy_mapping_lets_virtio_complete() {
    let mut steps: Vec<(Op, Vec<u8>)> = vec![
        // Root entry for bus 0 -> context table.
        (
            Op::VtdRoot,
            le(&[&[0], &0u16.to_le_bytes(), &0u16.to_le_bytes()]),
        ),
        // Context entry for 00:01.0: present, TT 0, SLPTPTR = PT page 0; AW 1 (3 levels),
        // domain 1.
        (
            Op::VtdContext,
            le(&[
                &[8],
                &1u16.to_le_bytes(),
                &(1u32 | (1 << 8)).to_le_bytes(),
                &[8],
            ]),
        ),
        // PT page 0 [0] -> PT page 1; PT page 1 [0] -> 2 MiB large page at 0 (R/W, PS).
        (
            Op::VtdPte,
            le(&[&[0], &0u16.to_le_bytes(), &3u16.to_le_bytes(), &[9]]),
        ),
        (
            Op::VtdPte,
            le(&[
                &[1],
                &0u16.to_le_bytes(),
                &(0x8000u16 | 0x83).to_le_bytes(),
                &[0],
            ]),
        ),
        (Op::VtdEnable, vec![0]),
        (Op::VirtioInit, virtio_init(0)),
        (Op::VirtioRequest, virtio_request(0, 0, 5, 256)),
    ];
    let steps: Vec<(Op, &[u8])> = steps.iter_mut().map(|(o, v)| (*o, v.as_slice())).collect();
    let (m, r) = run(&encode(LEGACY, &steps));
    assert_ne!(r.vtd_gsts & (1 << 31), 0, "translation on");
    assert_eq!(r.vtd_fault_records, 0, "{r:?}");
    assert_eq!(r.virtio_used[0], 1, "{r:?}");
    assert_eq!(status_byte(&m, 0, 0), 0);
    assert!(r.stats.contains("intel-iommu statistics"), "{}", r.stats);
}

// PASID device (vmm/docs/pasid-device.md): a FILL descriptor runs inside the doorbell write,
// the pattern lands in memory and the completion record says SUCCESS.
#[test]
fn seed_pasid_device_fill_completes() {
    let desc = le(&[
        &[0, 0], // wq 0, slot 0
        &[2, 0], // FILL, no flags (record at the default place)
        &256u32.to_le_bytes(),
        &0u16.to_le_bytes(),
        &0x100u16.to_le_bytes(),
        &0x1122_3344_5566_7788u64.to_le_bytes(),
        &[0], // kick
    ]);
    let (m, r) = run(&encode(
        LEGACY,
        &[
            (Op::PasidCaps, &[0]),
            (Op::PasidWq, &le(&[&[0], &0u32.to_le_bytes(), &[2], &[0]])),
            (Op::PasidDesc, &desc),
        ],
    ));
    assert_eq!(r.pasid_completed[0], 1, "{r:?}");
    let v: u64 = m
        .mem()
        .read_obj(GuestAddress(addrs::DATA + 0x100 + 8))
        .unwrap();
    assert_eq!(v, 0x1122_3344_5566_7788);
    let status: u8 = m
        .mem()
        .read_obj(GuestAddress(addrs::WQ_COMPLETION))
        .unwrap();
    assert_eq!(status, 1, "completion record SUCCESS");
}

// A PASID-tagged queue behind scalable-mode VT-d with translation on and no PASID entry
// faults: the queue stops with TRANSLATION_FAULT or RING_READ_FAULT, VT-d records a fault.
#[test]
fn seed_pasid_device_faults_behind_scalable_vtd() {
    let desc = le(&[
        &[1, 0],
        &[1, 0], // COPY
        &64u32.to_le_bytes(),
        &0u16.to_le_bytes(),
        &0x200u16.to_le_bytes(),
        &0u64.to_le_bytes(),
        &[0],
    ]);
    let pasid = (1u32 << 31) | 5;
    let (_, r) = run(&encode(
        SCALABLE_ATS_PRS,
        &[
            (Op::PasidCaps, &[1 | 8 | 16]),
            (Op::PasidWq, &le(&[&[1], &pasid.to_le_bytes(), &[3], &[0]])),
            (Op::VtdEnable, &[1 | 4]),
            (Op::PasidDesc, &desc),
            (Op::Tick, &[]),
        ],
    ));
    assert_eq!(r.pasid_completed[1], 0, "{r:?}");
    assert_ne!(r.pasid_status[1] & 2, 0, "WQ_STATUS.ERROR: {r:?}");
    assert!(r.vtd_fault_records >= 1, "{r:?}");
}

// CF8/CFC (PCI 3.0 §3.2.2.3.2): configuration through ports reaches the same functions as
// ECAM: enabling the PASID device's memory decoding through CFC makes its BAR answer.
#[test]
fn seed_cf8_cfc_enables_a_bar() {
    let cf8 = (3u32 << 11) | 4; // 00:03.0, COMMAND
    let (m, _) = run(&encode(
        LEGACY,
        &[
            (Op::Cf8, &cf8.to_le_bytes()),
            // PIO write to port index 2 (0xcfc), size index 1 (2 bytes): memory + bus master.
            (Op::PioWrite, &le(&[&[2, 1], &6u32.to_le_bytes()])),
        ],
    ));
    assert_eq!(
        m.mmio_read(PASID_BAR, 4),
        0x0001_0000,
        "VERSION through BAR0"
    );
    assert_eq!(
        m.mmio_read(disk_bar(0), 4),
        u64::from(u32::MAX),
        "disk 0 not enabled: master abort"
    );
}

// 82093AA §3.2.4: COM1's THR-empty interrupt (IER bit 1) reaches IOAPIC pin 4 and, with the
// pin unmasked, is sent as an MSI route to the interrupt range.
#[test]
fn seed_ioapic_pin_from_serial_is_routed() {
    let (_, r) = run(&encode(
        LEGACY,
        &[
            (Op::IoapicRte, &le(&[&[4], &0x31u64.to_le_bytes()])),
            // Port index 7 (0x3f9, IER), 1 byte: THR empty interrupt.
            (Op::PioWrite, &le(&[&[7, 0], &2u32.to_le_bytes()])),
        ],
    ));
    assert!(r.stats.contains("ioapic: 1 sent"), "{}", r.stats);
    assert!(r.msi_routes >= 1, "{r:?}");
}

// VT-d 5.1.4: with interrupt remapping on, a disk's MSI-X message in remappable format whose
// IRTE is not present is blocked and recorded as a fault (reason 0x25).
#[test]
fn seed_vtd_interrupt_remapping_blocks_absent_irte() {
    // Remappable format: address bit 4, handle 0 in bits 19:5.
    let msix = le(&[
        &[0, 1],
        &(0xfee0_0010u32).to_le_bytes(),
        &0u32.to_le_bytes(),
    ]);
    let (_, r) = run(&encode(
        LEGACY_IR,
        &[
            (Op::VtdEnable, &[1 | 2 | 16]),
            (Op::VirtioInit, &virtio_init(0)),
            (Op::MsixEntry, &msix),
            (Op::VirtioRequest, &virtio_request(0, 4, 0, 20)),
        ],
    ));
    assert_eq!(r.virtio_used[0], 1, "{r:?}");
    assert!(r.vtd_fault_records >= 1, "IR fault recorded: {r:?}");
    assert!(r.stats.contains("blocked"), "{}", r.stats);
}

// Every region of the table takes reads and writes of every size without breaking an
// invariant; the VT-d window answers VER.
#[test]
fn seed_every_region_every_size() {
    let mut input = vec![SCALABLE_ATS_PRS | 2];
    for region in 0..20u8 {
        for size in 0..8u8 {
            input.push(Op::MmioRead as u8);
            input.extend_from_slice(&[region]);
            input.extend_from_slice(&(u32::from(size) * 3).to_le_bytes());
            input.push(size);
            input.push(Op::MmioWrite as u8);
            input.extend_from_slice(&[region]);
            input.extend_from_slice(&(u32::from(size) * 5).to_le_bytes());
            input.push(size);
            input.extend_from_slice(&0x0101_0101_0101_0101u64.to_le_bytes());
        }
    }
    let (m, r) = run(&input);
    assert_eq!(r.steps, 320);
    assert_ne!(m.mmio_read(layout::VTD_START, 4), 0, "VER");
}

// Virtio 1.2 §2.7.5.3: a request behind one indirect descriptor completes like a direct one.
#[test]
fn seed_virtio_indirect_request_completes() {
    let (m, r) = run(&encode(
        LEGACY,
        &[
            (Op::VirtioInit, &virtio_init(1)),
            (Op::VirtioIndirect, &virtio_request(1, 0, 7, 512)),
        ],
    ));
    assert_eq!(r.virtio_used[1], 1, "{r:?}");
    assert_eq!(status_byte(&m, 1, 0), 0, "VIRTIO_BLK_S_OK");
    let b: u8 = m
        .mem()
        .read_obj(GuestAddress(addrs::VQ + addrs::VQ_STRIDE + 0x8000))
        .unwrap();
    assert_eq!(b, 7, "sector 7's content");
}

// VT-d 6.5.2.8: an invalidation wait descriptor with SW set writes its status data to the
// status address when the queue reaches it, inside the IQT write.
#[test]
fn seed_vtd_qi_wait_writes_status() {
    let wait = le(&[
        &[4, 2],
        &0xabcd_0000_0000_0020u64.to_le_bytes(),
        &0u64.to_le_bytes(),
    ]);
    let (m, r) = run(&encode(
        LEGACY,
        &[(Op::VtdEnable, &[1 | 16]), (Op::VtdQiTyped, &wait)],
    ));
    let status: u32 = m.mem().read_obj(GuestAddress(addrs::INV_STATUS)).unwrap();
    assert_eq!(status, 0xabcd_0000, "{r:?}");
}

// PCIe 6.0 §10.4 and VT-d 7.4 through the PASID device (vmm/docs/pasid-device.md): a USE_PRI
// work queue whose FILL hits a read-only second-level mapping (scalable mode, PASID entry
// with PGTT 2) sends one page request; it lands in the VT-d page request queue and the queue
// waits for the response.
#[test]
fn seed_pasid_device_page_request_reaches_the_prq() {
    let pasid = (1u32 << 31) | 7;
    let desc = le(&[
        &[2, 0],
        &[2, 0], // FILL
        &64u32.to_le_bytes(),
        &0u16.to_le_bytes(),
        &0x300u16.to_le_bytes(),
        &0x55u64.to_le_bytes(),
        &[0],
    ]);
    let (m, r) = run(&encode(
        SCALABLE_ATS_PRS,
        &[
            (
                Op::VtdRoot,
                &le(&[&[0], &0u16.to_le_bytes(), &0u16.to_le_bytes()]),
            ),
            // 00:03.0: present, DTE, PASIDE, PRE; PASID directory.
            (
                Op::VtdContext,
                &le(&[&[0x18], &0x1du16.to_le_bytes(), &0u32.to_le_bytes(), &[2]]),
            ),
            // PASID 7: present, 3 levels, PGTT second-level, PT page 0; domain 1.
            (
                Op::VtdPasid,
                &le(&[
                    &7u16.to_le_bytes(),
                    &0x85u16.to_le_bytes(),
                    &1u32.to_le_bytes(),
                    &0u16.to_le_bytes(),
                    &[8],
                ]),
            ),
            (
                Op::VtdPte,
                &le(&[&[0], &0u16.to_le_bytes(), &3u16.to_le_bytes(), &[9]]),
            ),
            // 2 MiB at 0, read-only.
            (
                Op::VtdPte,
                &le(&[
                    &[1],
                    &0u16.to_le_bytes(),
                    &(0x8000u16 | 0x81).to_le_bytes(),
                    &[0],
                ]),
            ),
            (Op::PasidCaps, &[1 | 8 | 16]),
            (Op::PasidWq, &le(&[&[2], &pasid.to_le_bytes(), &[3], &[2]])),
            (Op::VtdEnable, &[1 | 4]),
            (Op::PasidDesc, &desc),
            (Op::Tick, &[]),
        ],
    ));
    assert_eq!(m.mmio_read(PASID_BAR + 0x1c, 4), 1, "PAGE_REQUESTS: {r:?}");
    assert_ne!(r.pasid_status[2] & 4, 0, "WAITING_PAGE_RESPONSE: {r:?}");
    assert_eq!(
        m.mmio_read(layout::VTD_START + 0xc8, 8),
        0x20,
        "PQT moved by one 32-byte request"
    );
}
