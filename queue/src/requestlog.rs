//! The request log (contract §10): one line per request on stdout, rendered from Knative's
//! `logging.request-log-template`, a Go text/template. Knoxy renders the subset such
//! templates use: field paths (`.Request.Method`), `.Request.Header.Get "X"`,
//! `index .Request.Header "X"`, pipes, and `js`, `html`, `urlquery`, `print`, `printf`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use http::{HeaderMap, Request, Version};
use tokio::time::Instant;

/// Knative's default `logging.request-log-template` (config-observability).
pub const DEFAULT_TEMPLATE: &str = r#"{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}"#;

// === Types ===

#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// Commands separated by `|`; each command's output is the last argument of the next.
    Action(Vec<Command>),
}

#[derive(Debug, Clone, PartialEq)]
struct Command {
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Field(Vec<String>),
    Str(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template: {0}")]
pub struct TemplateError(String);

/// The revision fields every line may use (`.Revision.*`).
#[derive(Debug, Clone, Default)]
pub struct Revision {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub configuration: String,
    pub pod_name: String,
    pub pod_ip: String,
}

pub struct RequestLog {
    template: Template,
    revision: Revision,
    pub probes: bool,
}

/// One request being logged; written when dropped (after the response).
pub struct Entry {
    log: Arc<RequestLog>,
    started: Instant,
    method: String,
    uri: String,
    proto: &'static str,
    host: String,
    remote: String,
    content_length: u64,
    headers: HeaderMap,
    pub status: u16,
    pub size: u64,
}

// === The flow ===

impl RequestLog {
    pub fn new(template: Template, revision: Revision, probes: bool) -> Arc<RequestLog> {
        Arc::new(RequestLog {
            template,
            revision,
            probes,
        })
    }

    pub fn start<B>(self: &Arc<Self>, req: &Request<B>, remote: &str) -> Entry {
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_owned();
        Entry {
            log: Arc::clone(self),
            started: Instant::now(),
            method: req.method().as_str().to_owned(),
            uri,
            proto: match req.version() {
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            host,
            remote: remote.to_owned(),
            content_length: req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            headers: req.headers().clone(),
            status: 200,
            size: 0,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let latency = self.started.elapsed().as_secs_f64();
        let mut line = match self.log.template.render(&|path| self.field(path, latency)) {
            Ok(line) => line,
            Err(_) => format!(
                "Invalid request log template: method: {}, response code: {}, latency: {latency}, url: {}",
                self.method, self.status, self.uri
            ),
        };
        if !line.ends_with('\n') {
            line.push('\n');
        }
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

impl Entry {
    /// The value of a field path, or `None` when the template names a field that does not exist.
    fn field(&self, path: &[&str], latency: f64) -> Option<String> {
        let r = &self.log.revision;
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Some(match path {
            ["Request", "Method"] => self.method.clone(),
            ["Request", "RequestURI"] | ["Request", "URL"] => self.uri.clone(),
            ["Request", "Proto"] => self.proto.to_owned(),
            ["Request", "Host"] => self.host.clone(),
            ["Request", "RemoteAddr"] => self.remote.clone(),
            ["Request", "ContentLength"] => self.content_length.to_string(),
            ["Request", "UserAgent"] => header("user-agent"),
            ["Request", "Referer"] => header("referer"),
            ["Request", "Header", "Get", name] => header(name),
            ["Request", "Header", "index", name] => {
                let values: Vec<_> = self
                    .headers
                    .get_all(*name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                format!("[{}]", values.join(" "))
            }
            ["Response", "Code"] => self.status.to_string(),
            ["Response", "Size"] => self.size.to_string(),
            ["Response", "Latency"] => format!("{latency}"),
            ["Revision", "Name"] => r.name.clone(),
            ["Revision", "Namespace"] => r.namespace.clone(),
            ["Revision", "Service"] => r.service.clone(),
            ["Revision", "Configuration"] => r.configuration.clone(),
            ["Revision", "PodName"] => r.pod_name.clone(),
            ["Revision", "PodIP"] => r.pod_ip.clone(),
            ["TraceID"] => trace_id(&self.headers),
            _ => return None,
        })
    }
}

/// The trace id of `traceparent`, else `X-B3-Traceid`, else empty.
fn trace_id(headers: &HeaderMap) -> String {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        if let Some(id) = tp.split('-').nth(1) {
            return id.to_owned();
        }
    }
    headers
        .get("x-b3-traceid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// === Templates ===

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut nodes = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError("unclosed action".into()))?;
            let mut inner = &after[..close];
            // `{{-` and `-}}` trim the whitespace around the action.
            if let Some(i) = inner.strip_prefix("- ") {
                text = text.trim_end();
                inner = i;
            }
            let mut next = &after[close + 2..];
            if let Some(i) = inner.strip_suffix(" -") {
                next = next.trim_start();
                inner = i;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_owned()));
            }
            nodes.push(Node::Action(parse_pipeline(inner)?));
            rest = next;
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_owned()));
        }
        Ok(Template(nodes))
    }

    /// Renders with `field` resolving field paths; an unknown field is an error, as in Go.
    pub fn render(
        &self,
        field: &dyn Fn(&[&str]) -> Option<String>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for node in &self.0 {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(cmds) => {
                    let mut piped: Option<String> = None;
                    for cmd in cmds {
                        piped = Some(run(cmd, piped.take(), field)?);
                    }
                    out.push_str(&piped.unwrap_or_default());
                }
            }
        }
        Ok(out)
    }
}

fn run(
    cmd: &Command,
    piped: Option<String>,
    field: &dyn Fn(&[&str]) -> Option<String>,
) -> Result<String, TemplateError> {
    // `.Request.Header.Get "X"` and `index .Request.Header "X"` look a header up.
    if let (None, [Arg::Field(path), Arg::Str(name)]) = (&cmd.func, cmd.args.as_slice()) {
        if path.len() == 3 && path[2] == "Get" {
            return lookup(field, &[&path[0], &path[1], "Get", name]);
        }
    }
    if let (Some("index"), [Arg::Field(path), Arg::Str(name)]) =
        (cmd.func.as_deref(), cmd.args.as_slice())
    {
        let mut p: Vec<&str> = path.iter().map(String::as_str).collect();
        p.extend(["index", name.as_str()]);
        return lookup(field, &p);
    }
    let mut args = cmd
        .args
        .iter()
        .map(|a| match a {
            Arg::Str(s) => Ok(s.clone()),
            Arg::Field(path) => lookup(field, &path.iter().map(String::as_str).collect::<Vec<_>>()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    let joined = || args.concat();
    Ok(match cmd.func.as_deref() {
        None | Some("print") => joined(),
        Some("js") => js_escape(&joined()),
        Some("html") => joined()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;"),
        Some("urlquery") => joined().bytes().fold(String::new(), |mut s, b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                s.push(b as char);
            } else {
                let _ = write!(s, "%{b:02X}");
            }
            s
        }),
        Some("printf") => printf(&args)?,
        Some(other) => return Err(TemplateError(format!("function {other:?} not defined"))),
    })
}

fn lookup(
    field: &dyn Fn(&[&str]) -> Option<String>,
    path: &[&str],
) -> Result<String, TemplateError> {
    field(path).ok_or_else(|| TemplateError(format!("can't evaluate field .{}", path.join("."))))
}

/// `printf` with the verbs request-log templates use: `%s`, `%v`, `%d`, `%q`, `%%`.
fn printf(args: &[String]) -> Result<String, TemplateError> {
    let (format, values) = args
        .split_first()
        .ok_or_else(|| TemplateError("printf needs a format".into()))?;
    let mut values = values.iter();
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'v' | 'd') => {
                out.push_str(values.next().map_or("%!(MISSING)", String::as_str))
            }
            Some('q') => out.push_str(
                &serde_json::to_string(values.next().map_or("", String::as_str))
                    .unwrap_or_default(),
            ),
            other => return Err(TemplateError(format!("unsupported printf verb {other:?}"))),
        }
    }
    Ok(out)
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' | '>' | '&' | '=' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if (c as u32) < 0x20 || !c.is_ascii() && c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn parse_pipeline(src: &str) -> Result<Vec<Command>, TemplateError> {
    split_outside_quotes(src, '|')
        .iter()
        .map(|c| parse_command(c))
        .collect()
}

fn parse_command(src: &str) -> Result<Command, TemplateError> {
    let words = split_outside_quotes(src.trim(), ' ');
    let mut words = words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .peekable();
    let func = match words.peek() {
        Some(w) if !w.starts_with('.') && !w.starts_with('"') => words.next().map(str::to_owned),
        Some(_) => None,
        None => return Err(TemplateError(format!("empty command in {src:?}"))),
    };
    let args = words
        .map(|w| {
            if let Some(path) = w.strip_prefix('.') {
                Ok(Arg::Field(
                    path.split('.')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            } else if w.starts_with('"') {
                serde_json::from_str::<String>(w)
                    .map(Arg::Str)
                    .map_err(|_| TemplateError(format!("bad string {w}")))
            } else {
                Err(TemplateError(format!("unexpected {w:?} in {src:?}")))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command { func, args })
}

/// Splits on `sep` except inside double-quoted strings.
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        if quoted {
            cur.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            quoted = c == '"';
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> Result<String, TemplateError> {
        Template::parse(src)?.render(&|path| match path {
            ["Request", "Method"] => Some("GET".into()),
            ["Request", "RequestURI"] => Some("/a?x=1".into()),
            ["Request", "Header", "Get", "X-Id"] => Some("7".into()),
            ["Response", "Code"] => Some("200".into()),
            _ => None,
        })
    }

    #[test]
    fn fields_functions_and_pipes() {
        assert_eq!(
            render("{{.Request.Method}} {{js .Request.RequestURI}}").as_deref(),
            Ok("GET /a?x\\u003D1")
        );
        assert_eq!(
            render("{{.Request.RequestURI | urlquery}}").as_deref(),
            Ok("%2Fa%3Fx%3D1")
        );
        assert_eq!(
            render(r#"{{printf "%s=%q" .Request.Method .Response.Code}}"#).as_deref(),
            Ok("GET=\"200\"")
        );
        assert_eq!(
            render(r#"id={{.Request.Header.Get "X-Id"}}"#).as_deref(),
            Ok("id=7")
        );
        assert_eq!(render("a {{- .Response.Code -}} b").as_deref(), Ok("a200b"));
    }

    #[test]
    fn unknown_fields_and_functions_fail_at_render_and_bad_syntax_at_parse() {
        assert!(render("{{.Request.Nope}}").is_err());
        assert!(render("{{frob .Request.Method}}").is_err());
        assert!(Template::parse("{{.Request.Method").is_err());
    }

    #[test]
    fn default_template_parses() {
        assert!(Template::parse(DEFAULT_TEMPLATE).is_ok());
    }

    #[test]
    fn trace_id_prefers_traceparent() {
        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", "b3id".parse().expect("value"));
        assert_eq!(trace_id(&h), "b3id");
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("value"),
        );
        assert_eq!(trace_id(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
