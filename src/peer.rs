//! A whole running peer: index, server and registration, started together
//! and stopped together.
