//! Store-and-forward sync (being built).
