//! Scenario text format (filled in below).
