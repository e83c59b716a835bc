//! The instance create form: its choices (the caller's projects, the shapes, the images
//! it may use), a live price estimate of the chosen shape (the use case behind
//! `GET /v1/shapes/{id}/price`), and the create itself (`POST /v1/instances`'s use case).
//! A refusal keeps what was typed and says why in the form; a placement refusal lists, per
//! constraint, how many hosts it removed.

use super::render::{self, Equivalent, Layout, Page};
use crate::app::billing::prices;
use crate::app::{AppState, Caller, images, instances, inventory::shapes};
use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use plinth_api::*;
use plinth_domain::rating::money::money;
use serde::Deserialize;

/// What the form holds (as typed; a refusal draws it again).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub shape: String,
    #[serde(default)]
    pub image: String,
}

/// A choice of a select.
pub struct Choice {
    pub value: String,
    pub label: String,
}

/// One line of the estimate as shown.
pub struct EstimateRow {
    pub meter: &'static str,
    pub dimension: String,
    pub multiplier: i64,
    pub hourly: String,
    pub monthly: String,
}

/// The estimate fragment.
#[derive(Template)]
#[template(path = "console/estimate.html")]
pub struct EstimatePart {
    /// `None` with `problem` set: no estimate (why in `problem`).
    pub currency: Option<String>,
    pub hourly: String,
    pub monthly: String,
    pub hours: i64,
    pub book: String,
    pub rows: Vec<EstimateRow>,
    pub problem: Option<String>,
    pub shape: String,
    pub equivalent: Equivalent,
}

impl EstimatePart {
    async fn of(st: &AppState, caller: &Caller, shape: &str) -> EstimatePart {
        let equivalent =
            Equivalent::new(&format!("shape price {shape}"), "GET", &format!("/v1/shapes/{shape}/price"), None);
        let empty = |problem: String| EstimatePart {
            currency: None,
            hourly: String::new(),
            monthly: String::new(),
            hours: 0,
            book: String::new(),
            rows: Vec::new(),
            problem: Some(problem),
            shape: shape.to_string(),
            equivalent: equivalent.clone(),
        };
        if shape.is_empty() {
            return empty("Choose a shape to see its price.".into());
        }
        match prices::estimate(st, caller, shape, PriceEstimateQuery::default()).await {
            Ok(e) => EstimatePart {
                currency: Some(e.currency.clone()),
                hourly: money(e.hourly_micros),
                monthly: money(e.monthly_micros),
                hours: e.hours_per_month,
                book: format!("{} v{}", e.price_book, e.price_book_version),
                rows: e
                    .lines
                    .iter()
                    .map(|l| EstimateRow {
                        meter: l.meter.as_str(),
                        dimension: l.dimension.clone(),
                        multiplier: l.multiplier,
                        hourly: l.hourly_micros.map(money).unwrap_or_else(|| "not priced".into()),
                        monthly: l.monthly_micros.map(money).unwrap_or_else(|| "not priced".into()),
                    })
                    .collect(),
                problem: None,
                shape: shape.to_string(),
                equivalent,
            },
            Err(e) if e.kind == crate::app::Kind::Internal => {
                tracing::error!("price estimate failed: {}", e.detail);
                empty("The price could not be computed.".into())
            }
            Err(e) => empty(e.detail),
        }
    }
}

/// Why a create was refused, as the form shows it.
pub struct Refusal {
    pub detail: String,
    pub code: &'static str,
    /// A placement refusal: hosts considered and, per constraint, how many it removed.
    pub hosts: Option<u64>,
    pub removed: Vec<(String, u64)>,
}

impl Refusal {
    fn of(e: &crate::app::Error) -> Refusal {
        let c = e.constraint.as_ref();
        let placement = c.is_some_and(|c| c["rule"] == "placement");
        let removed = c
            .and_then(|c| c["removed"].as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default();
        Refusal {
            detail: e.detail.clone(),
            code: e.code,
            hosts: if placement { c.and_then(|c| c["hosts"].as_u64()) } else { None },
            removed,
        }
    }
}

#[derive(Template)]
#[template(path = "console/instance_new.html")]
struct NewPage {
    layout: Layout,
    form: CreateForm,
    projects: Vec<Choice>,
    shapes: Vec<Choice>,
    images: Vec<Choice>,
    estimate: EstimatePart,
    refusal: Option<Refusal>,
    equivalent: Equivalent,
}

async fn page(
    st: &AppState,
    caller: &Caller,
    mut form: CreateForm,
    refusal: Option<Refusal>,
) -> Result<NewPage, crate::app::Error> {
    let all = PageParams { limit: Some(MAX_LIMIT), cursor: None };
    let projects = crate::app::identity::projects::list(st, caller, &all, ProjectFilter::default()).await?.items;
    let shape_list = shapes::list(st, &all, ShapeFilter::default()).await?.items;
    let image_list = images::list(st, caller, &all, ImageFilter::default()).await?.items;
    if form.project.is_empty() {
        form.project = projects.first().map(|p| p.id.0.clone()).unwrap_or_default();
    }
    if form.shape.is_empty() {
        form.shape = shape_list.first().map(|s| s.name.clone()).unwrap_or_default();
    }
    if form.image.is_empty() {
        form.image =
            image_list.iter().find(|i| i.status == ImageStatus::Available).map(|i| i.name.clone()).unwrap_or_default();
    }
    let estimate = EstimatePart::of(st, caller, &form.shape).await;
    let project_name = projects.iter().find(|p| p.id.0 == form.project).map(|p| p.name.clone()).unwrap_or_default();
    let body =
        serde_json::json!({ "project_id": form.project, "name": form.name, "shape": form.shape, "image": form.image });
    let name = if form.name.is_empty() { "NAME" } else { form.name.as_str() };
    let equivalent = Equivalent::new(
        &format!(
            "instance create {name} --project {project_name} --shape {} --image {} --wait",
            form.shape, form.image
        ),
        "POST",
        "/v1/instances",
        Some(&body.to_string()),
    );
    Ok(NewPage {
        layout: Layout::of(st, caller, "Create an instance").await,
        projects: projects.into_iter().map(|p| Choice { value: p.id.0, label: p.name }).collect(),
        shapes: shape_list
            .into_iter()
            .map(|s| Choice {
                label: format!("{} ({} vCPU, {} MiB, {} GiB)", s.name, s.vcpus, s.memory_mib, s.disk_gib),
                value: s.name,
            })
            .collect(),
        images: image_list
            .into_iter()
            .filter(|i| i.status == ImageStatus::Available)
            .map(|i| Choice { label: i.name.clone(), value: i.name })
            .collect(),
        form,
        estimate,
        refusal,
        equivalent,
    })
}

/// `GET /instances/new`: the form (`?shape=` preselects a shape and prices it).
pub async fn new_form(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(form): Query<CreateForm>,
) -> Response {
    match page(&st, &caller, form, None).await {
        Ok(p) => Page(p).into_response(),
        Err(e) => render::app_error(e),
    }
}

/// `GET /instances/new/estimate?shape=`: the estimate fragment (the form's shape changed).
pub async fn estimate(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(form): Query<CreateForm>,
) -> Response {
    Page(EstimatePart::of(&st, &caller, &form.shape).await).into_response()
}

/// `POST /instances/new`: creates the instance as `POST /v1/instances` does, then shows
/// it; a refusal draws the form again with what was typed and why.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<CreateForm>,
) -> Response {
    let body = serde_json::json!({
        "project_id": form.project, "name": form.name, "shape": form.shape, "image": form.image,
    });
    let made = match serde_json::from_value::<InstanceCreate>(body) {
        Ok(b) => instances::create(&st, &caller, b).await,
        Err(e) => Err(crate::app::Error::invalid("invalid_field", e.to_string())),
    };
    match made {
        Ok(a) => Redirect::to(&format!("/instances/{}?op={}", a.instance.id, a.operation.id)).into_response(),
        Err(e) if e.kind == crate::app::Kind::Internal => render::app_error(e),
        Err(e) => {
            let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let refusal = Refusal::of(&e);
            let code = e.code;
            match page(&st, &caller, form, Some(refusal)).await {
                Ok(p) => {
                    let mut resp = (status, Page(p)).into_response();
                    resp.extensions_mut().insert(crate::error::ErrorCode(code.to_string()));
                    resp
                }
                Err(e) => render::app_error(e),
            }
        }
    }
}
