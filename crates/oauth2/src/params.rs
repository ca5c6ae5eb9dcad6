//! The parameters an application adds to a grant's or a login's requests
//! with `param` (`audience`, `resource`, `prompt`, …).

use std::fmt;

use super::Form;

/// Parameters added with `param`, sent in the order given after the
/// request's own. `Debug` shows their names, never their values: a
/// `resource` or `login_hint` may be private.
#[derive(Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Sets `name` to `value` alone: any earlier `name` goes, and the new
    /// one is sent last.
    pub(crate) fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value.into()));
    }

    /// Writes every parameter into `form`.
    pub(crate) fn write_to(&self, form: &mut Form) {
        for (name, value) in &self.0 {
            form.pair(name, value);
        }
    }

    pub(crate) fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_parameters_but_shows_no_value() {
        let mut params = Params::default();
        params.push("resource", "https://private.example.com");
        params.push("audience", "tenant-7");
        let shown = format!("{params:?}");
        assert_eq!(shown, r#"["resource", "audience"]"#);
    }

    #[test]
    fn set_replaces_every_earlier_value_of_the_name() {
        let mut params = Params::default();
        params.push("prompt", "consent");
        params.push("audience", "a");
        params.push("prompt", "login");
        params.set("prompt", "none");
        let mut form = Form::default();
        params.write_to(&mut form);
        assert_eq!(form.as_str(), "audience=a&prompt=none");
    }

    #[test]
    fn parameters_follow_the_form_in_the_order_given() {
        let mut params = Params::default();
        params.push("b", "2");
        params.push("a", "1 1");
        let mut form = Form::default();
        form.pair("grant_type", "x");
        params.write_to(&mut form);
        assert_eq!(form.as_str(), "grant_type=x&b=2&a=1+1");
    }
}
