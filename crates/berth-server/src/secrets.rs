//! Tenant secrets as a service: setting and removing them (sealed by the vault, recorded in the
//! audit log, pushed to the running proxies) and revealing a value to berth's own consumers (the
//! egress proxy's placeholder swap, env/file delivery, the gateway's `vault:` provider keys).
//! Nothing here hands a value to the API.

use berth_domain::{Name, Secret};
use berth_store::{SealedSecret, Store};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::vault::{valid_name, Vault};

/// The real value of a tenant's secret (for the proxy or env/file delivery; never for the API).
pub async fn reveal(
    store: &Store,
    vault: &Vault,
    tenant: &str,
    name: &str,
) -> anyhow::Result<Secret> {
    let s = store
        .secret(tenant, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("secret {tenant}/{name} not found"))?;
    vault.open(tenant, name, &s.nonce, &s.ciphertext)
}

/// Checks a tenant and a secret name (which must look like an environment variable).
pub fn check(tenant: &str, name: &str) -> ApiResult<Name> {
    let t = crate::error::tenant_name(tenant)?;
    if !valid_name(name) {
        return Err(ApiError::invalid(format!(
            "secret name {name:?} must look like an environment variable: A-Z, 0-9 and _, starting with a letter or _"
        )));
    }
    Ok(t)
}

/// Seals and stores a secret (new or rotated); running proxies swap the new value in at once.
/// `value` is `Err` when the request carrying it was malformed (recorded in the audit log too).
pub async fn set(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    name: &str,
    value: ApiResult<Secret>,
) -> ApiResult<SealedSecret> {
    let result = async {
        let t = check(tenant, name)?;
        let value = value?;
        if value.expose().is_empty() {
            return Err(ApiError::invalid("the secret value is empty"));
        }
        state.store.ensure_tenant(&t).await?;
        let (nonce, ct) = &state
            .vault
            .seal(t.as_str(), name, &value)
            .map_err(ApiError::internal)?;
        let sealed = state.store.put_secret(t.as_str(), name, nonce, ct).await?;
        crate::egress::refresh_secret(state, name).await;
        Ok(sealed)
    }
    .await;
    audit(
        &state.store,
        actor,
        "secret.set",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    result
}

/// Removes a secret; running proxies stop swapping it from the next request on.
pub async fn remove(state: &AppState, actor: &Actor, tenant: &str, name: &str) -> ApiResult<()> {
    let result = async {
        let t = check(tenant, name)?;
        if !state.store.delete_secret(t.as_str(), name).await? {
            return Err(ApiError::not_found(format!(
                "secret {tenant}/{name} not found"
            )));
        }
        crate::egress::refresh_secret(state, name).await;
        Ok(())
    }
    .await;
    audit(
        &state.store,
        actor,
        "secret.remove",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    result
}
