//! Node.js bindings of kt: the native addon of the npm package `ktconnect`.
