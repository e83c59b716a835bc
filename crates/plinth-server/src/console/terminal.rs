//! The serial console in the browser: a WebSocket per open console, carrying the guest's
//! output to xterm.js and what the user types back.
//!
//! `POST /instances/{id}/console/ticket` (a logged-in, same-origin request) mints a
//! single-use ticket of at most 60 s ([`crate::app::instances::terminal`]). The page opens
//! `GET /instances/{id}/console/ws` (its `Origin` must be this site) and sends
//! `{"ticket": "pct_…"}` as the first frame, within [`HELLO_WITHIN`]; nothing is sent
//! before it. Then, as JSON text frames:
//! - server → page: `{"type":"ready","read_only":bool}`, then `{"type":"output","data":…}`
//!   (the last 64 KiB first, then as the host ships it), `{"type":"error","detail":…}`;
//! - page → server: `{"input": "…"}`, typed as `POST /v1/instances/{id}/console/input`
//!   types (same use case, same audit); refused on a read-only console.
//!
//! The socket lives only as long as its session: each input, and the output follower at
//! least every 10 s, checks the session is still current (not logged out, its token not
//! revoked); when it is not, the socket says why and closes.
//!
//! Output follows the same long-poll as `GET /v1/instances/{id}/console?wait=`.

use super::session::{Session, cross_origin_upgrade};
use crate::app::identity::sessions;
use crate::app::instances::{console, terminal};
use crate::app::{AppState, Caller};
use crate::context::RequestCtx;
use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use plinth_api::{ConsoleInput, ConsoleQuery, ConsoleSessionId};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// How long the page has to send its ticket.
pub const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// Output history sent first, and the most sent in one frame.
const WINDOW: u64 = 64 * 1024;
/// How long one output long-poll waits.
const FOLLOW_WAIT: u64 = 10;
/// How often a following socket checks its session is still current.
const SESSION_CHECK: Duration = Duration::from_secs(10);

/// `POST /instances/{id}/console/ticket`: a ticket for this tab's console socket.
pub async fn ticket(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(Session(session)): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match terminal::ticket(&st, &caller, &session, &id).await {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => super::render::app_error(e),
    }
}

#[derive(Deserialize)]
struct Hello {
    ticket: String,
}

#[derive(Deserialize)]
struct Typed {
    input: String,
}

/// `GET /instances/{id}/console/ws`: the console socket (its first frame authenticates).
pub async fn socket(
    State(st): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if cross_origin_upgrade(&headers) {
        return (StatusCode::FORBIDDEN, "the console socket opens only from this site's pages").into_response();
    }
    ws.on_upgrade(move |socket| serve(st, id, ctx.request_id, socket))
}

fn frame(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn serve(st: AppState, id: String, request_id: String, mut socket: WebSocket) {
    let hello = match tokio::time::timeout(HELLO_WITHIN, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Hello>(&t).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        let _ = socket.send(frame(json!({ "type": "error", "detail": "send {\"ticket\": …} first" }))).await;
        return;
    };
    let granted = match terminal::redeem(&st, &hello.ticket, &id, &request_id).await {
        Ok(g) => g,
        Err(e) => {
            let detail = if e.kind == crate::app::Kind::Internal { "the server failed".to_string() } else { e.detail };
            let _ = socket.send(frame(json!({ "type": "error", "detail": detail }))).await;
            return;
        }
    };
    if socket.send(frame(json!({ "type": "ready", "read_only": granted.read_only }))).await.is_err() {
        return;
    }
    let (mut tx, mut rx) = socket.split();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = outgoing.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let follower =
        tokio::spawn(follow(st.clone(), granted.caller.clone(), granted.session_id.clone(), id.clone(), out.clone()));
    // What the page types, until it closes, or its session ends (logout, token revoked):
    // each input is typed as the session is now.
    let mut typer = granted.caller.clone();
    typer.action = "instances.console.input".into();
    while let Some(Ok(msg)) = rx.next().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        match sessions::principal_of(&st.store, granted.session_id.as_str()).await {
            Ok(p) => typer.principal = p,
            Err(e) => {
                let _ = out.send(frame(json!({ "type": "error", "detail": e.detail }))).await;
                break;
            }
        }
        let reply = match serde_json::from_str::<Typed>(&text) {
            Err(_) => Some("send {\"input\": \"…\"}".to_string()),
            Ok(_) if granted.read_only => Some("this console is read-only: your roles do not allow typing".to_string()),
            Ok(t) => match console::input(&st, &typer, &id, ConsoleInput { data: t.input }).await {
                Ok(_) => None,
                Err(e) if e.kind == crate::app::Kind::Internal => Some("the server failed".to_string()),
                Err(e) => Some(e.detail),
            },
        };
        if let Some(detail) = reply
            && out.send(frame(json!({ "type": "error", "detail": detail }))).await.is_err()
        {
            break;
        }
    }
    follower.abort();
    drop(out);
    let _ = writer.await;
}

/// Sends the console's last [`WINDOW`] bytes, then its output as it arrives, while the
/// session lasts (checked at least every [`SESSION_CHECK`]).
async fn follow(
    st: AppState,
    mut caller: Caller,
    session: ConsoleSessionId,
    id: String,
    out: tokio::sync::mpsc::Sender<Message>,
) {
    let mut query = ConsoleQuery { offset: None, limit: Some(WINDOW), wait: None };
    let mut checked = tokio::time::Instant::now();
    loop {
        if checked.elapsed() >= SESSION_CHECK {
            match sessions::principal_of(&st.store, session.as_str()).await {
                Ok(p) => caller.principal = p,
                Err(e) => {
                    let _ = out.send(frame(json!({ "type": "error", "detail": e.detail }))).await;
                    return;
                }
            }
            checked = tokio::time::Instant::now();
        }
        let log = match console::read(&st, &caller, &id, query).await {
            Ok(log) => log,
            Err(e) => {
                let detail =
                    if e.kind == crate::app::Kind::Internal { "the server failed".to_string() } else { e.detail };
                let _ = out.send(frame(json!({ "type": "error", "detail": detail }))).await;
                return;
            }
        };
        if !log.data.is_empty() && out.send(frame(json!({ "type": "output", "data": log.data }))).await.is_err() {
            return;
        }
        query = ConsoleQuery { offset: Some(log.next_offset), limit: Some(WINDOW), wait: Some(FOLLOW_WAIT) };
    }
}
