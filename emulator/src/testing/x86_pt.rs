//! Builder for x86-64 first-level and VT-d second-level page tables in [`super::FakeRam`].
