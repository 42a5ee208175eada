//! Interrupt remapping (VT-d 5): later.
//!
//! IRTA and the GCMD/GSTS bits IRE, SIRTP and CFI are implemented as
//! registers (the status bits follow the commands when ECAP.IR is set), and
//! interrupt-entry-cache invalidation descriptors are accepted and counted,
//! so a guest can enable interrupt remapping; remapping interrupts through
//! the IRTE table is the interrupt-remapping issue's work.
