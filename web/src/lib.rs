//! Browser bindings (issue #5). For now: the packed-model format check, so that the page can
//! tell a user early that a file is not a model.
use wasm_bindgen::prelude::*;

/// Parses a packed model file and returns its manifest as JSON, or an error naming what is wrong.
#[wasm_bindgen]
pub fn describe_model(bytes: &[u8]) -> Result<String, JsError> {
    let model = efq_shared::format::PackedModel::from_bytes(bytes)
        .map_err(|e| JsError::new(&e.to_string()))?;
    Ok(serde_json::to_string(&model.manifest).expect("manifest serialises"))
}
