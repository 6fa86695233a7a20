//! JSON Schema compatibility.
