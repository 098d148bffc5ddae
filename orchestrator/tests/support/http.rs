//! A loopback HTTP/1.1 server for download tests: fixed routes, HEAD, `Range` resumes,
//! redirects, extra headers and a connection dropped mid-body once. Serves 127.0.0.1 only.
// Shared by orchestrator/tests/fetch.rs and the CLI test tests/fetch_cli.rs; each uses a part.
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One served path.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes, on the first GET only.
    pub drop_after: Option<usize>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Answer with a redirect to this path instead.
    pub redirect: Option<String>,
    /// Send no `content-length`: the body ends when the connection closes.
    pub no_length: bool,
}

type Request = (String, String, HashMap<String, String>);

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    /// (method, path, lower-case headers) of every request.
    log: Vec<Request>,
    dropped: HashMap<String, bool>,
}

pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Server { base, state }
    }
    pub fn route(&self, path: &str, r: Route) {
        self.state.lock().unwrap().routes.insert(path.into(), r);
    }
    pub fn requests(&self, path: &str) -> Vec<(String, HashMap<String, String>)> {
        let st = self.state.lock().unwrap();
        st.log
            .iter()
            .filter(|l| l.1 == path)
            .map(|l| (l.0.clone(), l.2.clone()))
            .collect()
    }
}

fn serve(mut conn: TcpStream, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (route, first) = {
        let mut s = st.lock().unwrap();
        s.log.push((method.clone(), path.clone(), headers.clone()));
        let route = s.routes.get(&path).cloned();
        let first = method == "GET" && !s.dropped.contains_key(&path);
        if first {
            s.dropped.insert(path.clone(), true);
        }
        (route, first)
    };
    let Some(route) = route else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    };
    let extra: String = route
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    if let Some(to) = &route.redirect {
        let _ = write!(
            conn,
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        return;
    }
    let start = headers.get("range").and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    let (status, body) = match start {
        Some(s) if s >= route.body.len() => {
            let _ = conn.write_all(
                b"HTTP/1.1 416 Range Not Satisfiable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        Some(s) => ("206 Partial Content", &route.body[s..]),
        None => ("200 OK", &route.body[..]),
    };
    let length = if route.no_length {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\n{length}{extra}connection: close\r\n\r\n"
    );
    if method == "HEAD" {
        return;
    }
    match route.drop_after {
        Some(n) if first => {
            let _ = conn.write_all(&body[..n.min(body.len())]);
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        _ => {
            let _ = conn.write_all(body);
        }
    }
}
