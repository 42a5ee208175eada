//! The device-layer fuzz harness's own resources (alone in its test binary, so no other test
//! opens descriptors meanwhile).

use iommu_vmm::fuzzing::{self, Op, encode};

fn virtio_init(disk: u8) -> Vec<u8> {
    [&[disk][..], &u32::MAX.to_le_bytes(), &0u16.to_le_bytes()].concat()
}

fn virtio_request(disk: u8, rtype: u8, sector: u16, len: u16) -> Vec<u8> {
    [
        &[disk, rtype][..],
        &sector.to_le_bytes(),
        &len.to_le_bytes(),
        &[0],
    ]
    .concat()
}

fn run(data: &[u8]) -> fuzzing::RunReport {
    fuzzing::run(data).unwrap_or_else(|v| panic!("invariant broken: {v:?}"))
}

// A fuzz run builds a machine per input: one that leaked descriptors (memfds, eventfds) would
// exhaust them and then test nothing. Runs of every seed leave the descriptor count as it was.
#[test]
fn fuzz_machine_releases_its_descriptors() {
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let input = encode(
        2,
        &[
            (Op::VtdEnable, &[1 | 2 | 4 | 16]),
            (Op::VirtioInit, &virtio_init(0)),
            (Op::VirtioRequest, &virtio_request(0, 0, 1, 64)),
            (Op::VirtioInit, &virtio_init(1)),
            (Op::VirtioRequest, &virtio_request(1, 2, 1, 64)),
            (Op::PasidCaps, &[0]),
        ],
    );
    run(&input);
    let before = fds();
    for _ in 0..50 {
        let r = run(&input);
        assert_eq!(r.virtio_used, vec![1, 1]);
    }
    let after = fds();
    assert_eq!(after, before, "descriptors leaked over 50 runs");
}
