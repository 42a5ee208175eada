//! Replays every input saved under `tests/fuzz_regressions/` (crashes and
//! interesting inputs found by `cargo fuzz run vtd_ops`, stored as hex text,
//! one input per `.hex` file; regenerate with `xxd -p <artifact>`) through
//! the same decoder and invariants as the fuzz target, plus a few hand-made
//! seeds.

mod fuzz_ops;

#[test]
fn fuzz_regressions_replay_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let hex: String = text.split_whitespace().collect();
            let data: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            fuzz_ops::run(&data);
            n += 1;
        }
    }
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
