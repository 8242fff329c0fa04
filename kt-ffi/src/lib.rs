//! `kt-ffi`: the C ABI over kt-core (header `include/kt.h`).
