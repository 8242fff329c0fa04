//! Python bindings of kt: the native module `ktconnect._native`.
