//! `spellcast`: the terminal client of a Spellcast server (SPEC §4). Quote and cast a spell with
//! live progress (bars on a terminal, lines when piped), resume after a dropped connection
//! without losing or repeating a step, save the outputs, cancel, and read the balance and the
//! ledger. `--json` prints one JSON document for scripts.
//!
//! Exit codes: 0 done, 1 an error (unreachable server, refused request), 2 bad input (the
//! server's 400/422), 3 the run failed (and was refunded), 4 the run was canceled.

mod admin;
mod api;
mod follow;
mod show;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use api::{Api, ApiError};
use follow::Ended;
use show::Progress;

#[derive(Parser)]
#[command(
    name = "spellcast",
    version,
    about = "Cast Spellcast spells from a terminal"
)]
struct Cli {
    /// The server.
    #[arg(
        long,
        env = "SPELLCAST_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    url: String,
    /// A session token (else the one `spellcast login --dev` saved).
    #[arg(long, env = "SPELLCAST_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gets a session and saves it: through the site's OpenID provider (the device flow: open a
    /// link, enter a code), or a token you paste, or (`--dev`) a local server's demo session.
    Login {
        /// A demo session from the local server (POST /api/v1/dev/session).
        #[arg(long, conflicts_with = "paste")]
        dev: bool,
        /// Paste a session token (from your provider's sign-in) instead.
        #[arg(long)]
        paste: bool,
        /// Demo points to grant.
        #[arg(long, default_value_t = 1000)]
        grant: i64,
    },
    /// The spells there are, with their average prices.
    Spells,
    /// A binding quote for a spell.
    Quote {
        /// The spell's slug.
        slug: String,
    },
    /// Quotes, pays and runs a spell, showing every step; saves its outputs.
    Cast {
        /// The spell's slug.
        slug: String,
        /// An input, `name=value` (a value that reads as JSON is taken as JSON: 3, true);
        /// `name=@path` uploads the file at `path` for a file input.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Inputs from a JSON file (an object); `--input` adds to it.
        #[arg(long, value_name = "FILE")]
        input_json: Option<PathBuf>,
        /// Where outputs go (a folder per run is made in it).
        #[arg(long, default_value = "spellcast-outputs")]
        out: PathBuf,
        /// An https URL that receives the run's signed webhook deliveries.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Which deliveries it wants: `start`, `completed` (default: `completed`); repeatable.
        #[arg(long = "webhook-event", value_name = "EVENT", requires = "webhook")]
        webhook_events: Vec<String>,
    },
    /// Your runs, newest first.
    Runs {
        /// Runs at most.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Cancels a run (the steps not done are refunded).
    Cancel {
        /// The run's id.
        run_id: String,
    },
    /// The balance.
    Balance,
    /// The ledger, newest first.
    Ledger {
        /// Entries at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// An administrator's commands.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Gives USER PTS points (negative: takes them back, never below zero), with a reason the
    /// user sees in their ledger. On AWS the request is signed with your AWS credentials for the
    /// stack's admin URL (its `AdminUrl` output); locally it carries the server's admin token.
    Grant {
        /// The user's id (as `spellcast balance` shows it to them).
        user: String,
        /// Points, e.g. 100 or -20.
        #[arg(allow_hyphen_values = true)]
        pts: i64,
        /// Why: shown to the user.
        #[arg(long)]
        reason: String,
        /// Makes a retry safe: the same key and grant answer the first entry, nothing doubled.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The admin function's URL (the stack's `AdminUrl`); default: --url.
        #[arg(long, env = "SPELLCAST_ADMIN_URL")]
        admin_url: Option<String>,
        /// The local server's admin token; without it the grant is signed with AWS SigV4.
        #[arg(long, env = "SPELLCAST_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

/// Why the client stops with a non-zero status.
enum Failure {
    Api(ApiError),
    BadInput(String),
    Other(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

const EXIT_ERROR: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_FAILED: u8 = 3;
const EXIT_CANCELED: u8 = 4;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let api = Api::new(&cli.url);
    match run(&cli, &api).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            let (code, message) = match failure {
                Failure::Api(e) => {
                    let bad_input = matches!(&e, ApiError::Problem { status, .. }
                        if status.as_u16() == 400 || status.as_u16() == 422);
                    (
                        if bad_input {
                            EXIT_BAD_INPUT
                        } else {
                            EXIT_ERROR
                        },
                        e.to_string(),
                    )
                }
                Failure::BadInput(m) => (EXIT_BAD_INPUT, m),
                Failure::Other(m) => (EXIT_ERROR, m),
            };
            if cli.json {
                println!("{}", json!({"error": message}));
            } else {
                eprintln!("spellcast: {message}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: &Cli, api: &Api) -> Result<u8, Failure> {
    match &cli.command {
        Command::Login {
            dev: false, paste, ..
        } => {
            let token = if *paste {
                pasted_token()?
            } else {
                device_sign_in(api).await?
            };
            // Checked before it is kept: a token this server refuses is not saved.
            let me = api
                .call(Method::GET, "/api/v1/me/balance", Some(&token), None)
                .await?;
            let saved = save_token(&token).map_err(Failure::Other)?;
            say(cli, &me, || {
                format!(
                    "Signed in as {} with {} points (token saved to {}).",
                    str_of(&me["userId"]),
                    me["balances"]["PTS"],
                    saved.display()
                )
            });
            Ok(0)
        }
        Command::Login { grant, .. } => {
            let s = api
                .call(
                    Method::POST,
                    "/api/v1/dev/session",
                    None,
                    Some(&json!({"grantPts": grant})),
                )
                .await?;
            let token = s["token"].as_str().unwrap_or_default();
            let saved = save_token(token).map_err(Failure::Other)?;
            say(cli, &s, || {
                format!(
                    "Signed in as {} with {} points (token saved to {}).",
                    s["userId"].as_str().unwrap_or_default(),
                    s["balancePts"],
                    saved.display()
                )
            });
            Ok(0)
        }
        Command::Admin(AdminCommand::Grant {
            user,
            pts,
            reason,
            idempotency_key,
            admin_url,
            admin_token,
        }) => {
            let credential = match admin_token {
                Some(token) => admin::Credential::Token(token.clone()),
                None => admin::Credential::Aws,
            };
            let entry = admin::grant(
                &reqwest::Client::new(),
                admin_url.as_deref().unwrap_or(&cli.url),
                &json!({"userId": user, "pts": pts, "reason": reason}),
                idempotency_key.as_deref(),
                &credential,
            )
            .await?;
            say(cli, &entry, || {
                format!(
                    "Granted {} points to {} ({}), ledger entry {}.",
                    entry["pts"],
                    str_of(&entry["userId"]),
                    str_of(&entry["reason"]),
                    str_of(&entry["txId"])
                )
            });
            Ok(0)
        }
        Command::Spells => {
            let c = api.call(Method::GET, "/api/v1/spells", None, None).await?;
            say(cli, &c, || {
                rows(&c["spells"], |s| {
                    format!(
                        "{:<20} {:>6} pts  {}",
                        str_of(&s["slug"]),
                        s["avgCostPtsCached"],
                        str_of(&s["summary"])
                    )
                })
            });
            Ok(0)
        }
        Command::Quote { slug } => {
            let token = token(cli)?;
            let q = quote(api, &token, slug).await?;
            say(cli, &q, || {
                format!(
                    "{slug}: {} points, payable until {}",
                    q["costPts"],
                    str_of(&q["expiry"])
                )
            });
            Ok(0)
        }
        Command::Cast {
            slug,
            inputs,
            input_json,
            out,
            webhook,
            webhook_events,
        } => {
            let token = token(cli)?;
            let (mut context, files) = context(inputs, input_json.as_deref())?;
            upload_files(api, &token, &mut context, files).await?;
            let mut body = json!({ "slug": slug, "context": context });
            if let Some(url) = webhook {
                body["webhook"] = json!(url);
                if !webhook_events.is_empty() {
                    body["webhookEvents"] = json!(webhook_events);
                }
            }
            cast(cli, api, &token, slug, body, out).await
        }
        Command::Cancel { run_id } => {
            let token = token(cli)?;
            let path = format!("/api/v1/runs/{}/cancel", encode(run_id));
            let r = api
                .call(Method::POST, &path, Some(&token), Some(&json!({})))
                .await?;
            say(cli, &r, || match str_of(&r["status"]) {
                "canceled" => format!("Canceled; {} points refunded.", r["refundedPts"]),
                status => format!("Canceling ({status}): the run stops at its next safe point."),
            });
            Ok(0)
        }
        Command::Runs { limit } => {
            let token = token(cli)?;
            let path = format!("/api/v1/me/runs?limit={limit}");
            let r = api.call(Method::GET, &path, Some(&token), None).await?;
            say(cli, &r, || {
                rows(&r["runs"], |run| {
                    format!(
                        "{}  {:<10} {:<20} {:>6} pts  {}",
                        str_of(&run["createdAt"]),
                        str_of(&run["status"]),
                        str_of(&run["slug"]),
                        run["costPts"],
                        str_of(&run["runId"])
                    )
                })
            });
            Ok(0)
        }
        Command::Balance => {
            let token = token(cli)?;
            let b = api
                .call(Method::GET, "/api/v1/me/balance", Some(&token), None)
                .await?;
            say(cli, &b, || format!("{} points", b["balances"]["PTS"]));
            Ok(0)
        }
        Command::Ledger { limit } => {
            let token = token(cli)?;
            let path = format!("/api/v1/me/ledger?limit={limit}");
            let l = api.call(Method::GET, &path, Some(&token), None).await?;
            say(cli, &l, || {
                rows(&l["entries"], |e| {
                    format!(
                        "{}  {:<7} {:>8}  {}",
                        str_of(&e["at"]),
                        str_of(&e["kind"]),
                        e["pts"],
                        str_of(&e["runId"])
                    )
                })
            });
            Ok(0)
        }
    }
}

async fn quote(api: &Api, token: &str, slug: &str) -> Result<Value, ApiError> {
    let body = json!({"spellSlug": slug, "asset": "PTS"});
    api.call(
        Method::POST,
        "/api/v1/payments/invoice",
        Some(token),
        Some(&body),
    )
    .await
}

/// Quotes, pays (`body`: the cast without its invoice), follows the run to its end and saves
/// its outputs.
async fn cast(
    cli: &Cli,
    api: &Api,
    token: &str,
    slug: &str,
    mut body: Value,
    out: &Path,
) -> Result<u8, Failure> {
    let meta_path = format!("/api/v1/spells/{}/meta", encode(slug));
    let meta = api.call(Method::GET, &meta_path, None, None).await?;
    let q = quote(api, token, slug).await?;
    let invoice = str_of(&q["invoiceId"]).to_owned();
    body["invoiceId"] = json!(invoice);
    let c = api
        .call(
            Method::POST,
            "/api/v1/spells/cast",
            Some(token),
            Some(&body),
        )
        .await?;
    let run_id = str_of(&c["runId"]).to_owned();
    if !cli.json {
        eprintln!("Casting {slug} for {} points: run {run_id}", q["costPts"]);
    }
    let titles = meta["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| str_of(&s["title"]).to_owned())
        .collect();
    let mut progress = Progress::new(titles, cli.json);
    // Events seen, each once: with ids 1, 2, 3, ... this equals the last id when nothing was lost.
    let mut events = 0u64;
    // What each streaming step wrote, as it came (`--json` carries it).
    let mut streamed = serde_json::Map::new();
    let ended = {
        let shown = &mut progress;
        let streamed = &mut streamed;
        let dropped = |why: &str| eprintln!("connection lost ({why}); resuming");
        follow::follow(
            api,
            str_of(&c["streamUrl"]),
            &invoice,
            |_, kind, data| {
                events += 1;
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                if kind == "stepDelta" {
                    let text = str_of(&data["text"]);
                    shown.delta(index, text, data["progress"].as_f64().unwrap_or(0.0));
                    let so_far = streamed
                        .entry(str_of(&data["stepId"]).to_owned())
                        .or_insert_with(|| json!(""));
                    *so_far = json!(format!("{}{text}", str_of(so_far)));
                }
                if kind == "stepUpdate" && data["attempt"].as_u64().is_some_and(|a| a > 1) {
                    shown.afresh(index);
                    streamed.remove(str_of(&data["stepId"]));
                }
                if kind == "stepUpdate" {
                    // A durable wait says when it ends, and how long that is from now.
                    let wait = data["until"]
                        .as_str()
                        .map(|until| show::wait_message(until, chrono::Utc::now()));
                    shown.step(
                        index,
                        str_of(&data["status"]),
                        data["progress"].as_f64().unwrap_or(0.0),
                        wait.as_deref().or(data["message"].as_str()),
                    );
                }
            },
            dropped,
        )
        .await?
    };
    progress.finish();
    // The snapshot says how it ended, whichever way the stream did.
    let run_path = format!("/api/v1/runs/{}", encode(&run_id));
    let run = api
        .call(Method::GET, &run_path, Some(&invoice), None)
        .await?;
    if let Ended::Terminal(kind, data) = &ended {
        if kind == "spellExecutionError" && !cli.json {
            // The message is the step's reason; the step is named here, once.
            let step = meta["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["id"] == data["stepId"]);
            match step {
                Some(step) => eprintln!(
                    "Failed at “{}”: {}",
                    str_of(&step["title"]),
                    str_of(&data["message"])
                ),
                None => eprintln!("Failed: {}", str_of(&data["message"])),
            }
        }
    }
    let saved = match str_of(&run["status"]) {
        "succeeded" => save_outputs(api, &invoice, &run, &out.join(&run_id)).await?,
        _ => vec![],
    };
    let status = str_of(&run["status"]).to_owned();
    let report = json!({
        "runId": run_id, "status": status, "costPts": run["costPts"],
        "refundedPts": run["refundedPts"], "outputs": saved, "events": events,
        "lastEventId": run["lastEventId"], "streamed": streamed,
    });
    say(cli, &report, || match status.as_str() {
        "succeeded" => format!(
            "Done: {} output(s) in {}",
            saved.len(),
            out.join(&run_id).display()
        ),
        "canceled" => format!("Canceled: {} points refunded.", run["refundedPts"]),
        other => format!("The run {other}: {} points refunded.", run["refundedPts"]),
    });
    Ok(match status.as_str() {
        "succeeded" => 0,
        "canceled" => EXIT_CANCELED,
        _ => EXIT_FAILED,
    })
}

/// Writes every output of `run` into `dir`: files fetched with the invoice, values as text or
/// JSON. Returns the paths written.
async fn save_outputs(
    api: &Api,
    invoice: &str,
    run: &Value,
    dir: &Path,
) -> Result<Vec<String>, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure::Other(format!("{}: {e}", dir.display())))?;
    let mut saved = Vec::new();
    for (n, output) in run["outputs"].as_array().into_iter().flatten().enumerate() {
        let mime = str_of(&output["mime"]);
        let ext = match mime.split(';').next().unwrap_or_default() {
            "image/png" => "png",
            "image/svg+xml" => "svg",
            "image/jpeg" => "jpg",
            "text/plain" => "txt",
            "application/json" => "json",
            _ => "bin",
        };
        let bytes = match (output["url"].as_str(), &output["value"]) {
            (Some(url), _) => {
                let res = api
                    .request(Method::GET, url, Some(invoice))?
                    .send()
                    .await
                    .map_err(ApiError::from)?;
                if !res.status().is_success() {
                    return Err(Failure::Other(format!(
                        "output {n}: the server answered {}",
                        res.status()
                    )));
                }
                res.bytes().await.map_err(ApiError::from)?.to_vec()
            }
            (None, Value::String(text)) => text.clone().into_bytes(),
            (None, value) => serde_json::to_vec_pretty(value).unwrap_or_default(),
        };
        let path = dir.join(format!("{n}.{ext}"));
        std::fs::write(&path, bytes)
            .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
        saved.push(path.display().to_string());
    }
    Ok(saved)
}

/// The cast's inputs: the JSON file's object, then each `name=value`; and the files to upload
/// for `name=@path` (`@@` is a literal `@`).
fn context(
    inputs: &[String],
    file: Option<&Path>,
) -> Result<(Value, Vec<(String, PathBuf)>), Failure> {
    let mut files = Vec::new();
    let mut context = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Err(Failure::BadInput(format!(
                        "{}: not a JSON object",
                        path.display()
                    )))
                }
            }
        }
        None => Map::new(),
    };
    for input in inputs {
        let Some((name, raw)) = input.split_once('=') else {
            return Err(Failure::BadInput(format!(
                "--input {input}: use name=value"
            )));
        };
        if name.is_empty() {
            return Err(Failure::BadInput(format!(
                "--input {input}: the name is empty"
            )));
        }
        if let Some(rest) = raw.strip_prefix('@') {
            if let Some(literal) = rest.strip_prefix('@') {
                context.insert(name.to_owned(), Value::String(format!("@{literal}")));
            } else {
                files.push((name.to_owned(), PathBuf::from(rest)));
            }
            continue;
        }
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(
                v @ (Value::Number(_)
                | Value::Bool(_)
                | Value::Null
                | Value::Array(_)
                | Value::Object(_)),
            ) => v,
            _ => Value::String(raw.to_owned()),
        };
        context.insert(name.to_owned(), value);
    }
    Ok((Value::Object(context), files))
}

/// Uploads each file (SPEC §7.3): asks for an upload, PUTs the bytes where it says, and gives
/// the upload's id as the input's value.
async fn upload_files(
    api: &Api,
    token: &str,
    context: &mut Value,
    files: Vec<(String, PathBuf)>,
) -> Result<(), Failure> {
    for (name, path) in files {
        let bytes = std::fs::read(&path)
            .map_err(|e| Failure::BadInput(format!("--input {name}=@{}: {e}", path.display())))?;
        // The server judges a file by its bytes and keeps it as what they are: the type
        // declared here only has to be the one the PUT then carries.
        let mime = "application/octet-stream";
        let ticket = api
            .call(
                Method::POST,
                "/api/v1/uploads",
                Some(token),
                Some(&json!({"mime": mime, "bytes": bytes.len()})),
            )
            .await?;
        let mut put = api.put_to(str_of(&ticket["url"]))?;
        if let Some(headers) = ticket["headers"].as_object() {
            for (header, value) in headers {
                // reqwest sets the length from the body.
                if header != "content-length" && header != "host" {
                    put = put.header(header, str_of(value));
                }
            }
        }
        let sent = put.body(bytes).send().await.map_err(ApiError::from)?;
        if !sent.status().is_success() {
            return Err(Failure::Other(format!(
                "--input {name}=@{}: the upload was refused ({})",
                path.display(),
                sent.status()
            )));
        }
        context[name.as_str()] = ticket["uploadId"].clone();
    }
    Ok(())
}

/// The session token: `--token`/`SPELLCAST_TOKEN`, else the saved one.
fn token(cli: &Cli) -> Result<String, Failure> {
    if let Some(t) = &cli.token {
        return Ok(t.clone());
    }
    std::fs::read_to_string(token_file())
        .map(|t| t.trim().to_owned())
        .map_err(|_| {
            Failure::Other("no session: set SPELLCAST_TOKEN or run `spellcast login`".into())
        })
}

fn token_file() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("spellcast").join("token")
}

/// A token read from standard input (pasted at a prompt, or piped).
fn pasted_token() -> Result<String, Failure> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("Paste your session token and press Enter: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::Other(format!("cannot read the token: {e}")))?;
    let token = line.trim().trim_start_matches("Bearer ").to_owned();
    if token.split('.').count() != 3 {
        return Err(Failure::BadInput(
            "that is not a token (a JWT: three dot-separated parts)".into(),
        ));
    }
    Ok(token)
}

/// Signs in with the OAuth 2.0 device authorization flow (RFC 8628) of the server's OpenID
/// provider: the user opens a link in any browser and confirms a code; this waits for the ID
/// token. A provider without the flow: a pasted token instead.
async fn device_sign_in(api: &Api) -> Result<String, Failure> {
    let config = api
        .call(Method::GET, "/api/v1/auth/config", None, None)
        .await?;
    let oidc = &config["oidc"];
    let (Some(device), Some(token_url), Some(client)) = (
        oidc["deviceAuthorizationEndpoint"].as_str(),
        oidc["tokenEndpoint"].as_str(),
        oidc["clientId"].as_str(),
    ) else {
        if oidc.is_null() {
            return Err(Failure::Other(
                "this server signs nobody in with a provider: use `spellcast login --dev` (a \
                 local server) or `--paste`"
                    .into(),
            ));
        }
        eprintln!(
            "The sign-in provider offers no device flow: sign in on the site, copy the token."
        );
        return pasted_token();
    };
    let (status, start) = api
        .provider_form(
            device,
            &[("client_id", client), ("scope", "openid profile")],
        )
        .await?;
    let device_code = start["device_code"]
        .as_str()
        .filter(|_| status.is_success());
    let Some(device_code) = device_code else {
        return Err(Failure::Other(format!(
            "the provider would not start a sign-in: {status} {start}"
        )));
    };
    let link = start["verification_uri_complete"]
        .as_str()
        .or(start["verification_uri"].as_str())
        .unwrap_or_default();
    eprintln!(
        "To sign in, open {link} and confirm the code {}",
        str_of(&start["user_code"])
    );
    let mut every = std::time::Duration::from_secs(start["interval"].as_u64().unwrap_or(5).max(1));
    let until = std::time::Instant::now()
        + std::time::Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600));
    while std::time::Instant::now() < until {
        tokio::time::sleep(every).await;
        let (status, answer) = api
            .provider_form(
                token_url,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code),
                    ("client_id", client),
                ],
            )
            .await?;
        if let Some(token) = answer["id_token"].as_str().filter(|_| status.is_success()) {
            return Ok(token.to_owned());
        }
        match answer["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => every += std::time::Duration::from_secs(5),
            _ => {
                return Err(Failure::Other(format!(
                    "the provider did not sign you in: {}",
                    answer["error_description"]
                        .as_str()
                        .or(answer["error"].as_str())
                        .unwrap_or("no reason given")
                )))
            }
        }
    }
    Err(Failure::Other(
        "the sign-in code expired: run `spellcast login` again".into(),
    ))
}

/// Saves the token where only its owner can read it.
fn save_token(token: &str) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // `mode` applies to a new file only: an existing one (made by hand, or before) is
    // narrowed too, before the token is in it.
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    f.write_all(token.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Prints `value` as JSON with `--json`, else the text.
fn say(cli: &Cli, value: &Value, text: impl FnOnce() -> String) {
    if cli.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// One line per item of a JSON array.
fn rows(list: &Value, row: impl Fn(&Value) -> String) -> String {
    list.as_array()
        .into_iter()
        .flatten()
        .map(row)
        .collect::<Vec<_>>()
        .join("\n")
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
