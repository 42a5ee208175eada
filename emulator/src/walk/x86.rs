//! x86-64 4/5-level page walks (VT-d first-level, VT-d 3.6 and 9.7) and the
//! VT-d second-level format (VT-d 3.7 and 9.8).
