use proptest::prelude::*;

use super::*;

/// The RDS menus (`/file/copy` included).
const RDS: crate::grammar::RdsGrammar = crate::grammar::RdsGrammar { file_copy: true, btrfs: true };

fn parse(s: &str) -> Result<Vec<Statement>, SyntaxError> {
    parse_line(s, &RDS)
}

fn text(s: &str, quoted: bool) -> Value {
    Value::Text { text: s.to_string(), quoted }
}

/// `name=value` arguments with text values, in order (shared with `ops_tests`).
pub(crate) fn named(stmt: &Statement) -> Vec<(String, String)> {
    stmt.args
        .iter()
        .filter_map(|a| match a {
            Arg::Named { name, value, .. } => Some((name.clone(), value.as_text()?.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn both_spellings_of_a_path() {
    for line in
        ["/disk add type=file slot=x", "/disk/add type=file slot=x", "/disk/ add type=file slot=x"]
    {
        let s = &parse(line).unwrap()[0];
        assert_eq!(s.menu, ["disk"], "{line}");
        assert_eq!(s.command.as_deref(), Some("add"));
        assert_eq!(named(s), [("type".into(), "file".into()), ("slot".into(), "x".into())]);
    }
    let s = &parse("/system resource print").unwrap()[0];
    assert_eq!(s.menu, ["system", "resource"]);
    let s = &parse("/system/identity/print").unwrap()[0];
    assert_eq!(s.menu, ["system", "identity"]);
}

#[test]
fn quoted_values_with_escapes() {
    let s = &parse(r#"/disk set x comment="a \"b\" \\ \$c\_d\41""#).unwrap()[0];
    assert_eq!(named(s), [("comment".into(), r#"a "b" \ $c dA"#.into())]);
    assert!(matches!(&s.args[0], Arg::Unnamed { value, .. } if *value == text("x", false)));
}

#[test]
fn where_expressions() {
    let s =
        &parse(r#"/disk print detail where slot~"^pvc-" and type=file or !disabled"#).unwrap()[0];
    assert_eq!(s.args.len(), 2);
    let Arg::Where { expr, .. } = &s.args[1] else { panic!("{s:?}") };
    let Expr::Or(left, right) = expr else { panic!("{expr:?}") };
    assert!(matches!(**right, Expr::Not(_)));
    let Expr::And(a, b) = &**left else { panic!("{left:?}") };
    assert!(matches!(&**a, Expr::Cmp { property, op: CmpOp::Regex, .. } if property == "slot"));
    assert!(matches!(&**b, Expr::Cmp { property, op: CmpOp::Eq, .. } if property == "type"));
    // Juxtaposition means `and`; `!=` is one operator.
    let s = &parse("/disk print where type=file slot!=a").unwrap()[0];
    let Arg::Where { expr: Expr::And(_, b), .. } = &s.args[0] else { panic!("{s:?}") };
    assert!(matches!(&**b, Expr::Cmp { op: CmpOp::Ne, .. }));
}

#[test]
fn find_takes_an_expression_in_the_enclosing_menu() {
    for line in [r#"/disk remove [find slot="pvc-1"]"#, r#"/disk remove [find where slot="pvc-1"]"#]
    {
        let s = &parse(line).unwrap()[0];
        let Arg::Unnamed { value: Value::Sub(find), .. } = &s.args[0] else { panic!("{s:?}") };
        assert_eq!(find.command.as_deref(), Some("find"));
        assert_eq!(find.menu, ["disk"]);
        assert!(!find.absolute);
        assert!(matches!(&find.args[0], Arg::Where { .. }), "{line}");
    }
    let s = &parse("/file remove [find]").unwrap()[0];
    let Arg::Unnamed { value: Value::Sub(find), .. } = &s.args[0] else { panic!() };
    assert!(find.args.is_empty());
}

#[test]
fn serialize_wrapper_and_joined_statements() {
    let line = r#":put [:serialize to=json [/disk print detail as-value where slot="x"]]; /system identity print"#;
    let all = parse(line).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].command.as_deref(), Some(":put"));
    let Arg::Unnamed { value: Value::Sub(ser), .. } = &all[0].args[0] else { panic!() };
    assert_eq!(ser.command.as_deref(), Some(":serialize"));
    assert_eq!(named(ser), [("to".into(), "json".into())]);
    let Arg::Unnamed { value: Value::Sub(print), .. } = &ser.args[1] else { panic!() };
    assert_eq!(print.menu, ["disk"]);
    assert_eq!(all[1].menu, ["system", "identity"]);
}

#[test]
fn routeros_error_texts_with_columns() {
    let err = parse("/disk frobnicate x=1").unwrap_err();
    assert_eq!(err.to_string(), "bad command name frobnicate (line 1 column 7)");
    let err = parse("/nosuch print").unwrap_err();
    assert_eq!(err.to_string(), "bad command name nosuch (line 1 column 2)");
    let err = parse(r#"/disk add comment="open"#).unwrap_err();
    assert_eq!(err.to_string(), "syntax error (line 1 column 19)");
    let err = parse("/disk print ]").unwrap_err();
    assert_eq!(err.to_string(), "expected end of command (line 1 column 13)");
    let err = parse("/disk print;\n/disk bogus").unwrap_err();
    assert_eq!(err.to_string(), "bad command name bogus (line 2 column 7)");
    let err = parse(r#"/disk set x comment="$var""#).unwrap_err();
    assert!(matches!(err, SyntaxError::Syntax { .. }));
}

#[test]
fn bare_menu_change_has_no_command() {
    let s = &parse("/disk").unwrap()[0];
    assert_eq!(s.command, None);
}

proptest! {
    /// No input string, quoted with [`quote`], can add an argument or a command: the line
    /// parses to exactly one statement with exactly the intended arguments and values.
    #[test]
    fn quoting_cannot_inject(slot in ".*", comment in ".*", path in "\\PC*") {
        let line = format!(
            "/disk add type=file slot={} file-path={} comment={}",
            quote(&slot), quote(&path), quote(&comment)
        );
        let all = parse(&line).unwrap();
        prop_assert_eq!(all.len(), 1);
        let s = &all[0];
        prop_assert_eq!(s.command.as_deref(), Some("add"));
        prop_assert_eq!(named(s), vec![
            ("type".to_string(), "file".to_string()),
            ("slot".to_string(), slot),
            ("file-path".to_string(), path),
            ("comment".to_string(), comment),
        ]);
        prop_assert_eq!(s.args.len(), 4);
    }

    /// Quoted output is printable ASCII only: nothing a terminal or RouterOS would interpret.
    #[test]
    fn quoted_is_printable_ascii(text in ".*") {
        let q = quote(&text);
        prop_assert!(q.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
