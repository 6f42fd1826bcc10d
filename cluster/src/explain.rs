//! Watch errors in an operator's words: for RBAC's `forbidden`, which verb on which resource
//! was refused and the ClusterRole rule that grants it.

use kube::runtime::watcher;

use crate::connect::chain;

/// `(group, plural)` of a watched kind.
pub type Resource = (&'static str, &'static str);

pub fn watch_error(e: &watcher::Error, (group, plural): Resource) -> String {
    let (verb, status) = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) => ("list", Some(s.as_ref())),
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => ("watch", Some(s.as_ref())),
        watcher::Error::WatchError(s) => ("watch", Some(s.as_ref())),
        _ => ("watch", None),
    };
    let qualified = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    match status {
        Some(s) if s.code == 403 => format!(
            "forbidden: cannot {verb} {qualified} ({}); the ClusterRole knoxy (deploy/base/rbac.yaml) grants it with the rule {{apiGroups: [\"{group}\"], resources: [{plural}], verbs: [get, list, watch]}}",
            s.message
        ),
        Some(s) if s.code == 401 => format!(
            "unauthorized to {verb} {qualified}: the credentials were refused ({})",
            s.message
        ),
        Some(s) if s.code == 404 => format!(
            "cannot {verb} {qualified}: the API server does not serve it ({}); is Knative Serving installed?",
            s.message
        ),
        _ => format!("cannot {verb} {qualified}: {}", chain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_the_resource_and_the_rule() {
        let status = kube::core::Status::failure("ingresses.networking.internal.knative.dev is forbidden: User \"x\" cannot list resource", "Forbidden")
            .with_code(403);
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        let text = watch_error(&e, ("networking.internal.knative.dev", "ingresses"));
        assert!(
            text.starts_with("forbidden: cannot list ingresses.networking.internal.knative.dev ("),
            "{text}"
        );
        assert!(
            text.contains("resources: [ingresses], verbs: [get, list, watch]"),
            "{text}"
        );
    }
}
