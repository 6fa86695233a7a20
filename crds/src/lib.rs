//! Millrace API types.
