//! `GET /v1/commit/in-doubt`: the transactions in doubt on this node, in
//! every commit instance it runs (see [`crate::commit`]).

use actix_web::web;
use serde::{Deserialize, Serialize};

use super::{ApiError, HttpContext};
use crate::commit::{in_doubt_on, InDoubt};

/// What `GET /v1/commit/in-doubt` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InDoubtReport {
    /// The node's name.
    pub node: String,
    /// Its transactions in doubt, by instance then id.
    pub transactions: Vec<InDoubt>,
}

/// `GET /v1/commit/in-doubt`.
pub(super) async fn in_doubt(
    ctx: web::Data<HttpContext>,
) -> Result<web::Json<InDoubtReport>, ApiError> {
    let node = ctx.node();
    Ok(web::Json(InDoubtReport {
        node: node.name().to_string(),
        transactions: in_doubt_on(node).await,
    }))
}
