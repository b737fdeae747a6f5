//! tuning: host tuning profiles for the broker (check, apply with a snapshot, revert) and the
//! preflight checks `broker start` runs. Empty until the tuning issue fills it; it compiles so
//! the workspace layout is in place.
