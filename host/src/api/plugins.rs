//! Plugin versions over the admin API: upload (`PUT /v1/plugins/{name}`), list versions,
//! activate (a rollback is activating an earlier one; with `percent`, a canary), promote a
//! canary, and dry-run a candidate over stored events. The work is the deployer's
//! ([`crate::deploy`]) and the dry run's ([`crate::dryrun`]); this module only speaks HTTP.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::{
    ActivateRequest, DeployedVersion, DryRunQuery, PluginActivation, PluginVersionInfo, PluginVersions,
};
use super::{ApiError, AppState, ErrorBody};
use crate::deploy::DeployError;
use crate::dryrun::{self, DryRunReport};

fn deploy_error(error: DeployError) -> ApiError {
    match error {
        DeployError::Invalid(error) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_rejected", error.to_string())
        }
        DeployError::BadInput(message) => ApiError::invalid_field("sha256", message),
        DeployError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        DeployError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        DeployError::Store(error) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("{error:#}")).retry_after(1)
        }
    }
}

/// A plugin name as the plugins folder would have it (`<name>.wasm`).
fn checked_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_field("name", format!("{name:?} is not a plugin name (letters, digits, `_` and `-`)")))
    }
}

/// An uploaded component, at most `plugins.max_file_mib`.
async fn component(state: &AppState, body: axum::body::Body) -> Result<Vec<u8>, ApiError> {
    let limit = state.max_plugin_bytes;
    let too_large = format!("the component is larger than the {limit}-byte limit (plugins.max_file_mib)");
    Ok(super::read_body(body, limit, too_large).await?.to_vec())
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// `false`: store the version without serving it.
    pub activate: Option<bool>,
}

/// `PUT /v1/plugins/{name}`: a new version of a plugin, the component as the body.
#[utoipa::path(put, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path, description = "Plugin name"), DeployQuery), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"), responses((status = 200, description = "Stored (and serving unless activate=false)", body = DeployedVersion), (status = 400, description = "Bad name or query", body = ErrorBody), (status = 413, description = "Over plugins.max_file_mib", body = ErrorBody), (status = 422, description = "Not a valid plugin, or it rejects a webhook's plugin_config (named); the serving version keeps serving", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    checked_name(&name)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let wasm = component(&state, body).await?;
    let uploaded_by = if state.admin_token.is_some() { "admin token" } else { "loopback" };
    let activate = query.activate.unwrap_or(true);
    let deployed = state.deployer.deploy(&name, wasm, uploaded_by, activate).await.map_err(deploy_error)?;
    let version = deployed.version;
    let answer = DeployedVersion {
        plugin: version.plugin,
        sha256: version.sha256,
        size: version.size,
        new: deployed.new,
        activated: deployed.activated,
    };
    Ok(Json(answer).into_response())
}

/// `GET /v1/plugins/{name}/versions`: the stored versions, newest first.
#[utoipa::path(get, path = "/v1/plugins/{name}/versions", tag = "plugins", params(("name" = String, Path, description = "Plugin name")), responses((status = 200, description = "Stored versions, newest first, with which serve", body = PluginVersions), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn versions(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let store_error = |error: anyhow::Error| deploy_error(DeployError::Store(error));
    let stored = state.store.plugin_versions(&name).await.map_err(store_error)?;
    let activations = state.store.plugin_activations().await.map_err(store_error)?;
    let activation = activations.into_iter().find(|a| a.plugin == name);
    let versions = stored
        .into_iter()
        .map(|version| {
            let serving = activation.as_ref().is_some_and(|a| a.sha256 == version.sha256);
            let canary_percent = activation
                .as_ref()
                .and_then(|a| a.canary.as_ref())
                .filter(|c| c.sha256 == version.sha256)
                .map(|c| c.percent);
            PluginVersionInfo {
                sha256: version.sha256,
                size: version.size,
                uploaded_at_ms: version.uploaded_at_ms,
                uploaded_by: version.uploaded_by,
                serving,
                canary_percent,
            }
        })
        .collect();
    Ok(Json(PluginVersions { plugin: name, versions }).into_response())
}

/// `POST /v1/plugins/{name}/activate`: a stored version serves (a rollback is activating an
/// earlier one); with `percent`, as a canary beside the serving version.
#[utoipa::path(post, path = "/v1/plugins/{name}/activate", tag = "plugins", params(("name" = String, Path, description = "Plugin name")), request_body = ActivateRequest, responses((status = 200, description = "What serves now", body = PluginActivation), (status = 400, description = "Bad body", body = ErrorBody), (status = 404, description = "No such stored version", body = ErrorBody), (status = 409, description = "An ambiguous sha256 prefix, or a canary with nothing serving", body = ErrorBody), (status = 422, description = "The version rejects a webhook's plugin_config", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn activate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<ActivateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if request.percent.is_some_and(|p| p == 0 || p > 100) {
        return Err(ApiError::invalid_field("percent", "must be 1-100"));
    }
    let activation = state.deployer.activate(&name, &request.sha256, request.percent).await.map_err(deploy_error)?;
    Ok(Json(PluginActivation::from(activation)).into_response())
}

/// `POST /v1/plugins/{name}/promote`: the canary serves every delivery.
#[utoipa::path(post, path = "/v1/plugins/{name}/promote", tag = "plugins", params(("name" = String, Path, description = "Plugin name")), responses((status = 200, description = "What serves now", body = PluginActivation), (status = 409, description = "No canary", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn promote(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let activation = state.deployer.promote(&name).await.map_err(deploy_error)?;
    Ok(Json(PluginActivation::from(activation)).into_response())
}

/// `POST /v1/plugins/{name}/dry-run`: replays stored events through the serving version and
/// a candidate (the body, or a stored `sha256`), sending nothing, and reports what changes.
#[utoipa::path(post, path = "/v1/plugins/{name}/dry-run", tag = "plugins", params(("name" = String, Path, description = "Plugin name"), DryRunQuery), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The candidate component (or empty, with `sha256`)"), responses((status = 200, description = "Summary and the changed events", body = DryRunReport), (status = 400, description = "Bad query, or a webhook that does not use the plugin", body = ErrorBody), (status = 404, description = "No such stored version", body = ErrorBody), (status = 409, description = "Nothing serving to compare with", body = ErrorBody), (status = 422, description = "The candidate is not a valid plugin, or rejects a webhook's plugin_config", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn dry_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DryRunQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = query.limit.unwrap_or(dryrun::DEFAULT_LIMIT);
    if limit == 0 || limit > dryrun::MAX_LIMIT {
        return Err(ApiError::invalid_field("limit", format!("must be 1-{}", dryrun::MAX_LIMIT)));
    }
    let users = state.webhooks.using_plugin(&name);
    let webhooks: Vec<_> = match &query.webhook {
        Some(id) => match users.iter().find(|w| &w.config.id == id) {
            Some(webhook) => vec![webhook.clone()],
            None => {
                return Err(ApiError::invalid_field("webhook", format!("webhook {id:?} does not use plugin `{name}`")));
            }
        },
        None => users,
    };
    let Some(serving) = state.registry.current(&name) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("plugin `{name}` has no serving version to compare with"),
        ));
    };
    let wasm = component(&state, body).await?;
    let wasm = (!wasm.is_empty()).then_some(wasm);
    let candidate = state.deployer.candidate(&name, wasm, query.sha256.as_deref()).await.map_err(deploy_error)?;
    let configs: std::collections::BTreeMap<String, crate::plugins::PluginConfig> =
        webhooks.iter().map(|w| (w.config.id.clone(), w.plugin_config.clone())).collect();
    let ids: Vec<String> = configs.keys().cloned().collect();
    let store_error = |error: anyhow::Error| deploy_error(DeployError::Store(error));
    let events = state.store.webhook_event_ids(&ids, query.since_ms, limit).await.map_err(store_error)?;
    let report = dryrun::run(&state.registry, state.store.as_ref(), serving, candidate, &configs, events)
        .await
        .map_err(store_error)?;
    Ok(Json(report).into_response())
}
