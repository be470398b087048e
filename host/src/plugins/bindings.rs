//! Host bindings generated from `wit/plugin.wit` (the only copy of the contract).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "transformer",
});

pub use hookwasm::plugin::host::Level;
