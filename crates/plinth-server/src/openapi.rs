//! The two OpenAPI documents, generated from the handlers' annotations: the public API
//! (`/v1`, health, metrics) and the agent protocol (`/agent/v1`). Conventions shared by
//! every operation — bearer auth, the problem+json error response, `Idempotency-Key` on
//! POST and `If-Match` on PATCH/DELETE — are added here once instead of on each handler.

use plinth_api::Problem;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi as _, PartialSchema, ToSchema};

/// The public API document's fixed parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Plinth API",
        version = "1.0.0",
        description = "Plinth turns hosts and bare-metal servers into a cloud: inventory, identity, shapes and more. \
            Authenticate with `Authorization: Bearer plt_…`. Errors are `application/problem+json` with a stable `code`."
    ),
    tags(
        (name = "tenants", description = "Billing accounts"),
        (name = "projects", description = "Groups of resources in a tenant"),
        (name = "users", description = "People and service accounts"),
        (name = "tokens", description = "API tokens"),
        (name = "role-bindings", description = "Who may do what"),
        (name = "audit", description = "The record of every change"),
        (name = "inventory", description = "Sites, racks, hosts and join tokens (operators)"),
        (name = "shapes", description = "Sizes tenants consume"),
        (name = "images", description = "Boot images: disks, kernels and initrds"),
        (name = "networking", description = "VPCs, subnets, network interfaces and security groups"),
        (name = "storage", description = "Volume types and volumes"),
        (name = "billing", description = "Usage, quotas, price books, invoices, credits, commitments and budgets"),
        (name = "system", description = "Health and metrics"),
    ),
    modifiers(&Conventions)
)]
pub struct PublicDoc;

/// The agent protocol document's fixed parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Plinth agent protocol",
        version = "1.0.0",
        description = "Spoken by `plinth agent` to the server. The agent dials out; it opens no port."
    ),
    tags((name = "agent", description = "Enrolment and host reports")),
    modifiers(&Conventions)
)]
pub struct AgentDoc;

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.schemas.insert(Problem::name().to_string(), Problem::schema());
        api.security =
            Some(vec![utoipa::openapi::security::SecurityRequirement::new::<&str, [&str; 0], &str>("bearer", [])]);
    }
}

fn problem_response() -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description("A refusal or failure, as application/problem+json with a stable `code`")
            .content(
                plinth_api::PROBLEM_JSON,
                Content::new(Some(RefOr::<Schema>::Ref(Ref::from_schema_name("Problem")))),
            )
            .build(),
    )
}

fn header(name: &str, description: &str) -> RefOr<utoipa::openapi::path::Parameter> {
    RefOr::T(
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(String::schema()))
            .build(),
    )
}

fn each_operation(api: &mut OpenApi, mut f: impl FnMut(&str, &mut Operation)) {
    for item in api.paths.paths.values_mut() {
        for (method, op) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ] {
            if let Some(op) = op {
                f(method, op);
            }
        }
    }
}

/// Adds the conventions that need the operations to exist (run after routes are merged).
pub fn finish(mut api: OpenApi) -> OpenApi {
    each_operation(&mut api, |method, op| {
        op.responses.responses.insert("default".into(), problem_response());
        let params = op.parameters.get_or_insert_with(Vec::new);
        match method {
            "post" => params.push(header(
                "Idempotency-Key",
                "Retry safely: the same key and body replays the first answer; another body is 422 idempotency_key_reused",
            )),
            "patch" | "delete" => {
                params.push(header("If-Match", "The generation you read; a different current generation is 409 generation_mismatch"))
            }
            _ => {}
        }
    });
    api
}

/// The public document's fixed parts, before routes are added.
pub fn public_base() -> OpenApi {
    PublicDoc::openapi()
}

/// The agent document's fixed parts, before routes are added.
pub fn agent_base() -> OpenApi {
    AgentDoc::openapi()
}
