//! The download path against a server on the loopback interface: no network outside.

use std::io::{Read, Write};
use std::net::TcpListener;

use rnnlm_data::{DataError, RemoteFile, sha1_of_file};
use rnnlm_tests::{scratch_dir, shared_data};

/// Serves `body` to `requests` connections on 127.0.0.1, then stops. Returns the URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/timemachine.txt", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

fn remote(url: String) -> RemoteFile {
    RemoteFile {
        url,
        ..RemoteFile::time_machine()
    }
}

/// Nothing but the fetched file (no partial downloads) in the cache dir.
fn only_the_file(dir: &std::path::Path) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["timemachine.txt"], "no partial files left behind");
}

#[test]
fn downloads_verifies_and_then_uses_the_cache_without_network() {
    let good = std::fs::read(shared_data("timemachine.txt")).unwrap();
    let dir = scratch_dir("download-good");
    let path = remote(serve(good, 1)).fetch(&dir).unwrap();
    assert_eq!(sha1_of_file(&path).unwrap(), rnnlm_data::TIME_MACHINE_SHA1);
    only_the_file(&dir);
    // Second call: the server is gone (it served one request); the cached copy is used.
    let unreachable = remote("http://127.0.0.1:1/timemachine.txt".to_owned());
    assert_eq!(unreachable.fetch(&dir).unwrap(), path);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corrupt_download_is_removed_and_never_replaces_a_good_copy() {
    let dir = scratch_dir("download-bad");
    let err = remote(serve(b"not the book".to_vec(), 1))
        .fetch(&dir)
        .unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    assert!(
        err.to_string().contains(rnnlm_data::TIME_MACHINE_SHA1),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "partial file removed"
    );

    // A stale, wrong cached copy is re-fetched; a failed re-fetch leaves it untouched.
    let cached = dir.join("timemachine.txt");
    std::fs::write(&cached, "stale").unwrap();
    let err = remote(serve(b"still wrong".to_vec(), 1))
        .fetch(&dir)
        .unwrap_err();
    assert!(err.to_string().contains("was left as it was"), "{err}");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), "stale");
    only_the_file(&dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_network_says_how_to_pass_a_local_file() {
    let dir = scratch_dir("download-offline");
    let err = remote("http://127.0.0.1:1/timemachine.txt".to_owned())
        .fetch(&dir)
        .unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("--data FILE") && message.contains("timemachine.txt"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).ok();
}
