//! `troupe chat`: a terminal client of the chat app's routes
//! (`troupe::sample` `chat`) on a node's HTTP endpoint.
//!
//! ```sh
//! troupe chat --node http://127.0.0.1:8080 --room lobby          # interactive
//! troupe chat --node http://127.0.0.1:8080 --room lobby --once   # print the room, exit
//! ```
//!
//! It prints each message of the room as the node delivers it, one line
//! each: `#N  node:k  sender: text`, a reply with `(reply to node:k)`, and
//! a message that waited in the node's hold-back queue for something it
//! depends on (under causal order, the message it answers, or one its
//! sender had seen) marked `[held back]`. A line typed on stdin is posted
//! to the room; `/reply ID TEXT` posts a reply to message `ID`; `/quit` (or
//! end of input followed by Ctrl-C) leaves. The room is read every 300 ms
//! (`GET /v1/chat/ROOM?after=N`).

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{CliError, EndpointArgs};
use crate::http_client::NodeClient;
use crate::inspect::client;

/// How often the room is read.
const POLL: Duration = Duration::from_millis(300);

/// One message as printed (see the module docs).
pub fn format_message(m: &Value) -> String {
    let mut line = format!(
        "#{:<4} {:<10} {}: {}",
        m["n"].as_u64().unwrap_or_default(),
        m["id"].as_str().unwrap_or("?"),
        m["sender"].as_str().unwrap_or("?"),
        m["text"].as_str().unwrap_or("")
    );
    if let Some(r) = m["reply_to"].as_str() {
        let _ = write!(line, "  (reply to {r})");
    }
    if m["held_back"].as_bool() == Some(true) {
        line.push_str("  [held back]");
    }
    line
}

/// The room's messages after `after`, from the node.
fn read(client: &NodeClient, room: &str, after: u64) -> Result<Vec<Value>, CliError> {
    let path = format!("/v1/chat/{room}?after={after}");
    let a = client.get(&path)?;
    match a.status {
        200 => Ok(a.body["messages"].as_array().cloned().unwrap_or_default()),
        404 => Err(client.no_app(&path, "chat")),
        _ => Err(client.refused(&path, &a)),
    }
}

/// Post `text` (a reply to `reply_to`) to the room; the new message's id.
pub fn post(
    client: &NodeClient,
    room: &str,
    text: &str,
    reply_to: Option<&str>,
) -> Result<String, CliError> {
    let path = format!("/v1/chat/{room}");
    let a = client.post_json(&path, &json!({"text": text, "reply_to": reply_to}))?;
    match a.status {
        200 => Ok(a.body["id"].as_str().unwrap_or("?").to_string()),
        404 => Err(client.no_app(&path, "chat")),
        _ => Err(client.refused(&path, &a)),
    }
}

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Post a message.
    Say(&'a str),
    /// Post a reply to a message.
    Reply(&'a str, &'a str),
    /// Leave.
    Quit,
    /// Nothing (an empty line).
    Nothing,
    /// A command not understood (the message says why).
    Bad(String),
}

/// Parse a typed line (see the module docs).
pub fn parse_input(line: &str) -> Input<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Input::Nothing;
    }
    if line == "/quit" {
        return Input::Quit;
    }
    if let Some(rest) = line.strip_prefix("/reply ") {
        return match rest.trim().split_once(' ') {
            Some((id, text)) if !text.trim().is_empty() => Input::Reply(id, text.trim()),
            _ => Input::Bad("usage: /reply ID TEXT".into()),
        };
    }
    if line.starts_with('/') {
        return Input::Bad(format!("unknown command {line:?} (/reply ID TEXT, /quit)"));
    }
    Input::Say(line)
}

/// `troupe chat --node URL --room ROOM [--once]`.
pub fn chat_command(endpoint: &EndpointArgs, room: &str, once: bool) -> Result<(), CliError> {
    let client = client(endpoint)?;
    let mut after = 0;
    let show = |messages: Vec<Value>, after: &mut u64| {
        let mut out = std::io::stdout().lock();
        for m in messages {
            *after = (*after).max(m["n"].as_u64().unwrap_or_default());
            let _ = writeln!(out, "{}", format_message(&m));
        }
        let _ = out.flush();
    };
    show(read(&client, room, after)?, &mut after);
    if once {
        return Ok(());
    }
    eprintln!(
        "room {room} on {}: type a line to post it, /reply ID TEXT, /quit",
        client.url()
    );
    let (lines, typed) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match typed.recv_timeout(POLL) {
            Ok(line) => {
                let posted = match parse_input(&line) {
                    Input::Say(text) => post(&client, room, text, None),
                    Input::Reply(id, text) => post(&client, room, text, Some(id)),
                    Input::Quit => return Ok(()),
                    Input::Nothing => continue,
                    Input::Bad(why) => {
                        eprintln!("{why}");
                        continue;
                    }
                };
                if let Err(e) = posted {
                    eprintln!("not posted: {e}");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // End of input: keep following the room until interrupted.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
        match read(&client, room, after) {
            Ok(m) => show(m, &mut after),
            Err(e) => eprintln!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_print_with_their_reply_and_hold_back_marks() {
        let m = json!({"n": 4, "id": "b:2", "sender": "b", "text": "yes",
                       "reply_to": "a:1", "held_back": true});
        assert_eq!(
            format_message(&m),
            "#4    b:2        b: yes  (reply to a:1)  [held back]"
        );
        let m = json!({"n": 1, "id": "a:1", "sender": "a", "text": "hi?",
                       "reply_to": null, "held_back": false});
        assert_eq!(format_message(&m), "#1    a:1        a: hi?");
    }

    #[test]
    fn typed_lines_are_messages_replies_or_commands() {
        assert_eq!(parse_input(" hello "), Input::Say("hello"));
        assert_eq!(
            parse_input("/reply a:1 sure thing"),
            Input::Reply("a:1", "sure thing")
        );
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input(""), Input::Nothing);
        assert!(matches!(parse_input("/reply a:1"), Input::Bad(_)));
        assert!(matches!(parse_input("/dance"), Input::Bad(_)));
    }
}
