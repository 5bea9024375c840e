//! The command builder: whatever text reaches a comment, a slot or a path, the line it
//! builds parses back (with the RouterOS grammar) to exactly the intended statements, with
//! the value intact: no input can add an argument or a command. Any raw line: the parser
//! answers or errs, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routeros::{
    grammar::RdsGrammar,
    ops::{Op, ReadFormat, ssh_line},
    syntax::{Arg, parse_line},
    types::{FilePath, Slot},
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let grammar = RdsGrammar { file_copy: true, btrfs: true };
    let _ = parse_line(&text, &grammar);

    let mut parts = text.splitn(3, '\u{1}');
    let comment = parts.next().unwrap_or("").to_string();
    let slot = Slot::new(parts.next().unwrap_or("pvc-1")).unwrap_or(Slot::new("pvc-1").unwrap());
    let op = Op::SetComment { slot: slot.clone(), comment: comment.clone() };
    let line = ssh_line(&op, ReadFormat::Json);
    let parsed = parse_line(&line, &grammar).expect("a built line parses");
    assert_eq!(parsed.len(), 1, "{line}");
    let values: Vec<String> = parsed[0]
        .args
        .iter()
        .filter_map(|a| match a {
            Arg::Named { name, value, .. } if name == "comment" => {
                value.as_text().map(str::to_string)
            }
            _ => None,
        })
        .collect();
    assert_eq!(values, [comment], "{line}");

    if let Ok(file) = FilePath::new(parts.next().unwrap_or("")) {
        for op in [
            Op::RemoveFile(file.clone()),
            Op::DeleteVolumeDisk {
                slot: slot.clone(),
                bases: vec![file.clone()],
                keep_comment: text.to_string(),
            },
            Op::ListFiles { under: file },
        ] {
            let line = ssh_line(&op, ReadFormat::Json);
            let parsed = parse_line(&line, &grammar).expect("a built line parses");
            let expected = if matches!(op, Op::DeleteVolumeDisk { .. }) { 3 } else { 1 };
            assert_eq!(parsed.len(), expected, "{line}");
        }
    }
});
