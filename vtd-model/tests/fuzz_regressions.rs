//! Replays every input saved under `tests/fuzz_regressions/` (crashes and
//! interesting inputs found by `cargo fuzz run vtd_ops`, stored as hex text,
//! one input per `.hex` file; regenerate with `xxd -p <artifact>`) through
//! the same decoder and invariants as the fuzz target, plus a few hand-made
//! seeds. The inputs are embedded with `include_str!` and listed in `SAVED`:
//! a saved input that is missing does not build, and one that is not listed
//! fails a test, so the replay cannot silently run on nothing.

mod fuzz_ops;

/// The saved inputs, embedded at build time (a missing file does not build; a new file in
/// the folder that is not listed here fails [`fuzz_regressions_folder_holds_exactly_the_listed_inputs`]).
const SAVED: &[(&str, &str)] = &[
    (
        "seed-legacy.hex",
        include_str!("fuzz_regressions/seed-legacy.hex"),
    ),
    (
        "seed-scalable.hex",
        include_str!("fuzz_regressions/seed-scalable.hex"),
    ),
];

/// Bytes of a saved input: hex text, whitespace ignored.
fn decode_hex(name: &str, text: &str) -> Vec<u8> {
    iommu_emulator::fuzz::decode_hex(name, text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn fuzz_regressions_folder_holds_exactly_the_listed_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = SAVED.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "every saved input must be listed in SAVED (and so replayed)"
    );
}

#[test]
fn fuzz_regressions_replay_without_panic() {
    let mut n = 0;
    for (name, text) in SAVED {
        let data = decode_hex(name, text);
        assert!(
            data.len() > 1,
            "{name}: a configuration byte and operations"
        );
        fuzz_ops::run(&data);
        n += 1;
    }
    assert_eq!(n, 2, "saved inputs replayed");
    // Seeds: empty, config only, a GCMD storm, a queue tail beyond the queue.
    fuzz_ops::run(&[]);
    fuzz_ops::run(&[1]);
    let mut seed = vec![1u8];
    for v in [0x8000_0000u64, 0x4000_0000, 0x0400_0000, 0xffff_ffff] {
        seed.push(0);
        seed.extend_from_slice(&0x18u16.to_le_bytes());
        seed.extend_from_slice(&v.to_le_bytes());
    }
    seed.push(8);
    seed.extend_from_slice(&0x88u16.to_le_bytes());
    seed.extend_from_slice(&0x7fff0u64.to_le_bytes());
    fuzz_ops::run(&seed);
    // Page requests into an unset queue and interrupts through an IRT at a
    // guessed address, with IR and perfmon enabled (scalable, EIM).
    let mut seed = vec![1u8 | 4];
    for (off, v) in [
        (0xb8u16, 0x1000u64 | 0x80f),
        (0x18, 1 << 24),
        (0x18, 1 << 25),
    ] {
        seed.push(8);
        seed.extend_from_slice(&off.to_le_bytes());
        seed.extend_from_slice(&v.to_le_bytes());
    }
    for op in [0xe0u8, 0xe1, 0xe1] {
        seed.push(op);
        seed.extend_from_slice(&0x0018u16.to_le_bytes());
        seed.push(0x3f);
        seed.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        seed.extend_from_slice(&0xfee0_0018u64.to_le_bytes());
    }
    // perfmon: enable counter 0 through ECMD, read it.
    seed.push(8);
    seed.extend_from_slice(&0x400u16.to_le_bytes());
    seed.extend_from_slice(&0xf0u64.to_le_bytes());
    seed.push(2);
    seed.extend_from_slice(&0x7c0u16.to_le_bytes());
    seed.push(8);
    fuzz_ops::run(&seed);
    eprintln!("replayed {n} saved inputs");
}
