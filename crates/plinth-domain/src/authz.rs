//! Roles and permissions: who a request acts as, and what that lets it see and change.
//!
//! A [`Principal`] is resolved from a token by the server; every decision here is a pure
//! function of the principal and the target. The store turns [`Principal::scope`] into the
//! tenant filter of every tenant-scoped query, so a handler cannot forget it.

use plinth_api::{ProjectId, Role, TenantId, TokenId, UserId};

/// One role binding as it applies to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    pub project_id: Option<ProjectId>,
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: UserId,
    pub token_id: TokenId,
    /// The user's tenant; None for platform users.
    pub tenant_id: Option<TenantId>,
    pub grants: Vec<Grant>,
}

/// What a query may see. Tenant-scoped store queries take one and filter by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything (operators).
    Platform,
    /// One tenant's objects; `projects` narrows project-owned objects when the caller is
    /// bound only to some projects.
    Tenant { tenant_id: TenantId, projects: Option<Vec<ProjectId>> },
    /// Nothing (a platform user without the operator role).
    Nothing,
}

impl Principal {
    /// Holds the platform-wide `operator` role.
    pub fn is_operator(&self) -> bool {
        self.grants.iter().any(|g| g.role == Role::Operator)
    }

    fn tenant_grant(&self, tenant: &TenantId, roles: &[Role]) -> bool {
        self.grants
            .iter()
            .any(|g| roles.contains(&g.role) && g.tenant_id.as_ref() == Some(tenant) && g.project_id.is_none())
    }

    fn project_grant(&self, tenant: &TenantId, project: &ProjectId, roles: &[Role]) -> bool {
        self.grants.iter().any(|g| {
            roles.contains(&g.role) && g.tenant_id.as_ref() == Some(tenant) && g.project_id.as_ref() == Some(project)
        })
    }

    /// The visibility every tenant-scoped query of this caller runs under.
    pub fn scope(&self) -> Scope {
        if self.is_operator() {
            return Scope::Platform;
        }
        let Some(tenant) = &self.tenant_id else { return Scope::Nothing };
        let all = [Role::TenantAdmin, Role::Member, Role::Viewer];
        if self.tenant_grant(tenant, &all) {
            return Scope::Tenant { tenant_id: tenant.clone(), projects: None };
        }
        let projects: Vec<ProjectId> = self
            .grants
            .iter()
            .filter(|g| g.tenant_id.as_ref() == Some(tenant))
            .filter_map(|g| g.project_id.clone())
            .collect();
        Scope::Tenant { tenant_id: tenant.clone(), projects: Some(projects) }
    }

    /// May change the tenant itself, its users, tokens and role bindings, and read its audit log.
    pub fn can_admin_tenant(&self, tenant: &TenantId) -> bool {
        self.is_operator() || self.tenant_grant(tenant, &[Role::TenantAdmin])
    }

    /// May create and change resources in a project (and create projects when `project`
    /// is None and the grant is tenant-wide).
    pub fn can_write_in(&self, tenant: &TenantId, project: Option<&ProjectId>) -> bool {
        if self.is_operator() || self.tenant_grant(tenant, &[Role::TenantAdmin]) {
            return true;
        }
        match project {
            None => false,
            Some(p) => self.tenant_grant(tenant, &[Role::Member]) || self.project_grant(tenant, p, &[Role::Member]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: Vec<Grant>, tenant: Option<&TenantId>) -> Principal {
        Principal { user_id: UserId::generate(), token_id: TokenId::generate(), tenant_id: tenant.cloned(), grants }
    }

    #[test]
    fn operator_sees_everything() {
        let p = principal(vec![Grant { role: Role::Operator, tenant_id: None, project_id: None }], None);
        assert_eq!(p.scope(), Scope::Platform);
        assert!(p.can_admin_tenant(&TenantId::generate()));
    }

    #[test]
    fn tenant_roles_stay_in_their_tenant() {
        let t = TenantId::generate();
        let other = TenantId::generate();
        let admin =
            principal(vec![Grant { role: Role::TenantAdmin, tenant_id: Some(t.clone()), project_id: None }], Some(&t));
        assert!(admin.can_admin_tenant(&t));
        assert!(!admin.can_admin_tenant(&other));
        assert!(!admin.is_operator());
        assert_eq!(admin.scope(), Scope::Tenant { tenant_id: t.clone(), projects: None });

        let p = ProjectId::generate();
        let member = principal(
            vec![Grant { role: Role::Member, tenant_id: Some(t.clone()), project_id: Some(p.clone()) }],
            Some(&t),
        );
        assert!(member.can_write_in(&t, Some(&p)));
        assert!(!member.can_write_in(&t, Some(&ProjectId::generate())));
        assert!(!member.can_write_in(&t, None));
        assert!(!member.can_admin_tenant(&t));
        assert_eq!(member.scope(), Scope::Tenant { tenant_id: t.clone(), projects: Some(vec![p]) });

        let viewer =
            principal(vec![Grant { role: Role::Viewer, tenant_id: Some(t.clone()), project_id: None }], Some(&t));
        assert!(!viewer.can_write_in(&t, Some(&ProjectId::generate())));
    }

    #[test]
    fn platform_user_without_operator_sees_nothing() {
        let p = principal(vec![], None);
        assert_eq!(p.scope(), Scope::Nothing);
    }
}
