//! The `/v1` endpoints beyond list/view/create/update/delete ([`crate::resources`]):
//! actions (instance start, host drain, token revoke, invoice finalize…), sub-resources
//! (events, console, allocations, invoice lines), reports and uploads, each with its wire
//! types.

use crate::client::{Client, Doc};
use crate::error::Result;
use crate::resources::{
    FloatingIps, Hosts, Images, Instances, Invoices, Operations, SecurityGroups, Shapes, Tokens, Volumes, one,
};
use plinth_api::*;
use serde::Serialize;

/// The `{}` body of an action without parameters.
#[derive(Serialize)]
struct Empty {}

/// An instance action (`POST /v1/instances/{id}/{action}`).
#[derive(Clone, Debug)]
pub enum InstanceAction {
    Start,
    Stop,
    Reboot,
    Resize(InstanceResize),
    Rebuild(InstanceRebuild),
}

/// A host action (`POST /v1/hosts/{id}/{action}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostVerb {
    Cordon,
    Uncordon,
    Drain,
    Maintenance,
    Retire,
    Fence,
    Fail,
}

impl HostVerb {
    /// The action's path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            HostVerb::Cordon => "cordon",
            HostVerb::Uncordon => "uncordon",
            HostVerb::Drain => "drain",
            HostVerb::Maintenance => "maintenance",
            HostVerb::Retire => "retire",
            HostVerb::Fence => "fence",
            HostVerb::Fail => "fail",
        }
    }
}

impl Client {
    /// `POST /v1/tokens/{id}/revoke`.
    pub async fn revoke_token(&self, id: &str) -> Result<Doc<ApiToken>> {
        self.post(&format!("{}/revoke", one::<Tokens>(id)), &Empty {}).await
    }

    /// `POST /v1/hosts/{id}/{verb}`.
    pub async fn host_action(&self, id: &str, verb: HostVerb) -> Result<Doc<HostAction>> {
        self.post(&format!("{}/{}", one::<Hosts>(id), verb.as_str()), &Empty {}).await
    }

    /// `GET /v1/shapes/{id}/price`.
    pub async fn shape_price(&self, id: &str, q: &PriceEstimateQuery) -> Result<Doc<PriceEstimate>> {
        self.get(&format!("{}/price", one::<Shapes>(id)), q).await
    }

    /// `GET /v1/hosts/{id}/allocations`.
    pub async fn host_allocations(&self, id: &str, page: &PageParams) -> Result<Doc<Page<Allocation>>> {
        self.get(&format!("{}/allocations", one::<Hosts>(id)), page).await
    }

    /// `POST /v1/instances/{id}/{action}`.
    pub async fn instance_action(&self, id: &str, action: &InstanceAction) -> Result<Doc<InstanceAccepted>> {
        let path = |verb: &str| format!("{}/{verb}", one::<Instances>(id));
        match action {
            InstanceAction::Start => self.post(&path("start"), &Empty {}).await,
            InstanceAction::Stop => self.post(&path("stop"), &Empty {}).await,
            InstanceAction::Reboot => self.post(&path("reboot"), &Empty {}).await,
            InstanceAction::Resize(b) => self.post(&path("resize"), b).await,
            InstanceAction::Rebuild(b) => self.post(&path("rebuild"), b).await,
        }
    }

    /// `POST /v1/instances/{id}/network-interfaces`: plug an existing NIC into a stopped instance.
    pub async fn attach_nic(&self, id: &str, body: &NetworkInterfaceAttach) -> Result<Doc<NetworkInterface>> {
        self.post(&format!("{}/network-interfaces", one::<Instances>(id)), body).await
    }

    /// `DELETE /v1/instances/{id}/network-interfaces/{nic_id}`: unplug a NIC from a stopped instance.
    pub async fn detach_nic(&self, id: &str, nic_id: &str) -> Result<Doc<()>> {
        self.send(
            reqwest::Method::DELETE,
            &format!("{}/network-interfaces/{nic_id}", one::<Instances>(id)),
            &(),
            None,
            None,
        )
        .await
    }

    /// `POST /v1/floating-ips/{id}/attach`: attach to a NIC, or move there.
    pub async fn attach_floating_ip(&self, id: &str, body: &FloatingIpAttach) -> Result<Doc<FloatingIp>> {
        self.post(&format!("{}/attach", one::<FloatingIps>(id)), body).await
    }

    /// `POST /v1/volumes/{id}/attach`.
    pub async fn attach_volume(&self, id: &str, body: &VolumeAttach) -> Result<Doc<VolumeAttachment>> {
        self.post(&format!("{}/attach", one::<Volumes>(id)), body).await
    }

    /// `POST /v1/volumes/{id}/detach`.
    pub async fn detach_volume(&self, id: &str, body: &VolumeDetach) -> Result<Doc<VolumeAttachment>> {
        self.post(&format!("{}/detach", one::<Volumes>(id)), body).await
    }

    /// `POST /v1/volumes/{id}/extend`.
    pub async fn extend_volume(&self, id: &str, body: &VolumeExtend) -> Result<Doc<Volume>> {
        self.post(&format!("{}/extend", one::<Volumes>(id)), body).await
    }

    /// `POST /v1/volumes/{id}/revert`.
    pub async fn revert_volume(&self, id: &str, body: &VolumeRevert) -> Result<Doc<Volume>> {
        self.post(&format!("{}/revert", one::<Volumes>(id)), body).await
    }

    /// `POST /v1/floating-ips/{id}/detach`.
    pub async fn detach_floating_ip(&self, id: &str) -> Result<Doc<FloatingIp>> {
        self.post(&format!("{}/detach", one::<FloatingIps>(id)), &Empty {}).await
    }

    /// `POST /v1/security-groups/{id}/rules`.
    pub async fn add_rule(&self, id: &str, body: &SecurityGroupRuleCreate) -> Result<Doc<SecurityGroupRule>> {
        self.post(&format!("{}/rules", one::<SecurityGroups>(id)), body).await
    }

    /// `DELETE /v1/security-groups/{id}/rules/{rule_id}`.
    pub async fn remove_rule(&self, id: &str, rule_id: &str) -> Result<Doc<()>> {
        self.send(reqwest::Method::DELETE, &format!("{}/rules/{rule_id}", one::<SecurityGroups>(id)), &(), None, None)
            .await
    }

    /// `GET /v1/instances/{id}/events`.
    pub async fn instance_events(&self, id: &str, page: &PageParams) -> Result<Doc<Page<InstanceEvent>>> {
        self.get(&format!("{}/events", one::<Instances>(id)), page).await
    }

    /// `GET /v1/instances/{id}/console`.
    pub async fn instance_console(&self, id: &str, q: &ConsoleQuery) -> Result<Doc<ConsoleLog>> {
        self.get(&format!("{}/console", one::<Instances>(id)), q).await
    }

    /// `POST /v1/instances/{id}/console/input`.
    pub async fn instance_console_input(&self, id: &str, body: &ConsoleInput) -> Result<Doc<ConsoleInputAccepted>> {
        self.post(&format!("{}/console/input", one::<Instances>(id)), body).await
    }

    /// `PUT /v1/images/{id}/files/{role}`: a file's `len` bytes streamed from `file`.
    pub async fn upload_image_file(
        &self,
        id: &str,
        role: ImageFileRole,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<Doc<Image>> {
        self.put_file(&format!("{}/files/{}", one::<Images>(id), role.as_str()), file, len).await
    }

    /// `GET /v1/operations/{id}`, long-polling up to `wait` (`10s`) for it to end.
    pub async fn operation(&self, id: &str, wait: &OperationWait) -> Result<Doc<Operation>> {
        self.get(&one::<Operations>(id), wait).await
    }

    /// `POST /v1/operations/{id}/cancel`.
    pub async fn cancel_operation(&self, id: &str) -> Result<Doc<Operation>> {
        self.post(&format!("{}/cancel", one::<Operations>(id)), &Empty {}).await
    }

    /// `GET /v1/capacity`.
    pub async fn capacity(&self) -> Result<Doc<CapacitySummary>> {
        self.get("/v1/capacity", &()).await
    }

    /// `GET /v1/system/background-tasks`.
    pub async fn background_tasks(&self) -> Result<Doc<Vec<BackgroundTask>>> {
        self.get("/v1/system/background-tasks", &()).await
    }

    /// `POST /v1/system/background-tasks/{name}/run`: what the run did, as the task reports
    /// it (a free-form object in the API).
    pub async fn run_background_task(&self, name: &str) -> Result<Doc<serde_json::Value>> {
        self.post(&format!("/v1/system/background-tasks/{name}/run"), &Empty {}).await
    }

    /// `POST /v1/system/clock` (test servers).
    pub async fn advance_clock(&self, body: &ClockAdvance) -> Result<Doc<ClockNow>> {
        self.post("/v1/system/clock", body).await
    }

    /// `GET /v1/usage`.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Doc<Page<UsageRecord>>> {
        self.get("/v1/usage", q).await
    }

    /// `GET /v1/invoices/current`: a tenant's invoice of a period, recomputed.
    pub async fn current_invoice(&self, q: &CurrentQuery) -> Result<Doc<Invoice>> {
        self.get("/v1/invoices/current", q).await
    }

    /// `GET /v1/invoices/{id}/lines`, optionally `group_by=resource`.
    pub async fn invoice_lines(&self, id: &str, q: &LinesQuery) -> Result<Doc<Vec<InvoiceLine>>> {
        self.get(&format!("{}/lines", one::<Invoices>(id)), q).await
    }

    /// `GET /v1/invoices/{id}/lines/{number}/evidence`.
    pub async fn invoice_line_evidence(&self, id: &str, number: u32) -> Result<Doc<InvoiceLineEvidence>> {
        self.get(&format!("{}/lines/{number}/evidence", one::<Invoices>(id)), &Empty {}).await
    }

    /// `POST /v1/invoices/{id}/finalize`.
    pub async fn finalize_invoice(&self, id: &str) -> Result<Doc<Invoice>> {
        self.post(&format!("{}/finalize", one::<Invoices>(id)), &Empty {}).await
    }

    /// `POST /v1/invoices/{id}/void`: answers the draft that replaces it.
    pub async fn void_invoice(&self, id: &str) -> Result<Doc<Invoice>> {
        self.post(&format!("{}/void", one::<Invoices>(id)), &Empty {}).await
    }

    /// `POST /v1/invoices/{id}/credit-notes`.
    pub async fn credit_note(&self, id: &str, body: &CreditNoteCreate) -> Result<Doc<Invoice>> {
        self.post(&format!("{}/credit-notes", one::<Invoices>(id)), body).await
    }

    /// `GET /v1/billing/export`: CSV text.
    pub async fn export(&self, q: &PeriodQuery) -> Result<String> {
        self.get_text("/v1/billing/export", q, "text/csv").await
    }

    /// `GET /v1/billing/revenue`.
    pub async fn revenue(&self, q: &RevenueQuery) -> Result<Doc<Vec<RevenueRow>>> {
        self.get("/v1/billing/revenue", q).await
    }

    /// `GET /v1/billing/reconciliation`.
    pub async fn reconciliation(&self, q: &PeriodQuery) -> Result<Doc<ReconciliationReport>> {
        self.get("/v1/billing/reconciliation", q).await
    }

    /// `GET /v1/quotas`: a tenant's and its projects' quotas, or one scope's.
    pub async fn quotas(&self, q: &QuotaQuery) -> Result<Doc<Vec<QuotaEntry>>> {
        self.get("/v1/quotas", q).await
    }

    /// `PUT /v1/quotas`.
    pub async fn set_quotas(&self, body: &QuotaSet) -> Result<Doc<Vec<QuotaEntry>>> {
        self.send(reqwest::Method::PUT, "/v1/quotas", &(), Some(body), None).await
    }
}
