//! RouterOS command-line syntax: parsing one exec line into statements. Pure: no I/O.
//!
//! What it accepts (the subset RouterOS shares with what rds-csi and the emulator use):
//! - statements joined with `;` (and newlines),
//! - menu paths in both spellings: `/disk add ...`, `/disk/add ...`, `/system resource print`,
//! - arguments `name=value`, unnamed values (`detail`, `pvc-x`, `*1A`), `where EXPR`,
//! - values: bare tokens, double-quoted strings with RouterOS escapes, `[ sub-statement ]`,
//! - script commands starting with `:` (`:put`, `:serialize`, `:len`, `:error`), and
//!   `:if (VALUE OP VALUE) do={ ... } else={ ... }` with one comparison (`=`, `!=`, `<`, `>`)
//!   of two values and blocks of statements,
//! - expressions for `where` and `find`: `name=v`, `name!=v`, `name~"regex"`, `name<v`,
//!   `name>v`, bare boolean properties, `!x`, `and`/`or`/`&&`/`||`, juxtaposition as `and`,
//!   and parentheses.
//!
//! Which words are menus and which are commands is not syntax: a [`Grammar`] answers that,
//! so the parser reports `bad command name X (line L column C)` exactly where RouterOS does.

use std::fmt;

/// Knows the menu tree (the emulator gates it by RouterOS version).
pub trait Grammar {
    /// `path` (e.g. `["system", "resource"]`) is a menu.
    fn is_menu(&self, path: &[String]) -> bool;
    /// `command` exists in the menu at `path`.
    fn has_command(&self, path: &[String], command: &str) -> bool;
}

/// A position in the input: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One command: the menu it runs in, the command word, and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Absolute menu path, e.g. `["disk"]`; empty for script commands and `find`.
    pub menu: Vec<String>,
    /// True when the statement spelled its menu (`/disk ...`); false for `[find ...]`.
    pub absolute: bool,
    /// The command word (`print`, `add`, `:put`, ...); `None` for a bare menu change (`/disk`).
    pub command: Option<String>,
    pub args: Vec<Arg>,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// `name=value`.
    Named { name: String, value: Value, pos: Pos },
    /// A value without a name: a keyword (`detail`), an item (`pvc-x`, `*1A`, `0`), or `[..]`.
    Unnamed { value: Value, pos: Pos },
    /// `where EXPR`, or the whole argument list of `find`.
    Where { expr: Expr, pos: Pos },
    /// The condition of `:if`: `(left op right)`.
    Cond { left: Value, op: CmpOp, right: Value, pos: Pos },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A bare token or a quoted string (escapes resolved); `quoted` tells which.
    Text { text: String, quoted: bool },
    /// `[ statement ]`: evaluated before the enclosing command.
    Sub(Box<Statement>),
    /// `{ statements }`: the body of `:if`'s `do=` and `else=`.
    Block(Vec<Statement>),
}

impl Value {
    /// The text of a literal value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text { text, .. } => Some(text),
            Value::Sub(_) | Value::Block(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Regex,
    Lt,
    Gt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Cmp {
        property: String,
        op: CmpOp,
        value: Value,
        pos: Pos,
    },
    /// A bare property name: true when the (boolean) property is true.
    Truthy {
        property: String,
        pos: Pos,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A RouterOS parse error, rendered in RouterOS's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("bad command name {word} (line {} column {})", pos.line, pos.column)]
    BadCommandName { word: String, pos: Pos },
    #[error("expected end of command (line {} column {})", pos.line, pos.column)]
    ExpectedEndOfCommand { pos: Pos },
    #[error("expected command name (line {} column {})", pos.line, pos.column)]
    ExpectedCommandName { pos: Pos },
    #[error("syntax error (line {} column {})", pos.line, pos.column)]
    Syntax { pos: Pos },
}

/// Parses a whole exec line (possibly several statements).
pub fn parse_line(input: &str, grammar: &dyn Grammar) -> Result<Vec<Statement>, SyntaxError> {
    let mut p = Parser { chars: input.chars().collect(), at: 0, grammar };
    let mut out = Vec::new();
    loop {
        p.skip_separators();
        if p.eof() {
            return Ok(out);
        }
        out.push(p.statement(&[])?);
        p.skip_blanks();
        match p.peek() {
            None => return Ok(out),
            Some(';') | Some('\n') => {}
            Some(_) => return Err(SyntaxError::ExpectedEndOfCommand { pos: p.pos() }),
        }
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    grammar: &'a dyn Grammar,
}

/// Characters that end a bare token.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '[' | ']' | '"' | '(' | ')' | '{' | '}')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.at + offset).copied()
    }

    fn pos(&self) -> Pos {
        self.pos_of(self.at)
    }

    fn pos_of(&self, index: usize) -> Pos {
        let before = &self.chars[..index.min(self.chars.len())];
        let line = 1 + before.iter().filter(|&&c| c == '\n').count();
        let line_start = before.iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
        Pos { line, column: index - line_start + 1 }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace() && c != '\n') {
            self.at += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace() || c == ';') {
            self.at += 1;
        }
    }

    /// A run of name characters (menu, command or argument name).
    fn name(&mut self) -> String {
        let start = self.at;
        while matches!(self.peek(), Some(c) if is_name_char(c)) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// One statement; `context` is the menu of the enclosing statement (for `[find ...]`).
    fn statement(&mut self, context: &[String]) -> Result<Statement, SyntaxError> {
        self.skip_blanks();
        let pos = self.pos();
        if self.peek() == Some(':') {
            self.at += 1;
            let word = self.name();
            if word.is_empty() {
                return Err(SyntaxError::ExpectedCommandName { pos: self.pos() });
            }
            let mut args = Vec::new();
            if word == "if" {
                args.push(self.condition()?);
            }
            args.extend(self.args(&[])?);
            return Ok(Statement {
                menu: Vec::new(),
                absolute: false,
                command: Some(format!(":{word}")),
                args,
                pos,
            });
        }
        let absolute = self.peek() == Some('/');
        let mut menu: Vec<String> = if absolute { Vec::new() } else { context.to_vec() };
        if absolute {
            self.at += 1;
        }
        let mut command = None;
        loop {
            self.skip_blanks();
            if matches!(self.peek(), None | Some(';') | Some('\n') | Some(']') | Some('}')) {
                break;
            }
            let word_pos = self.pos();
            let start = self.at;
            let word = self.name();
            if word.is_empty() || matches!(self.peek(), Some('=')) {
                if word.is_empty() {
                    return Err(SyntaxError::Syntax { pos: word_pos });
                }
                // `name=` where a command was expected.
                return Err(SyntaxError::ExpectedCommandName { pos: word_pos });
            }
            let mut candidate = menu.clone();
            candidate.push(word.clone());
            if self.grammar.is_menu(&candidate) {
                menu = candidate;
                if self.peek() == Some('/') {
                    self.at += 1;
                }
                continue;
            }
            if self.grammar.has_command(&menu, &word) {
                command = Some(word);
                break;
            }
            // Report the whole bad token, as RouterOS does.
            while matches!(self.peek(), Some(c) if !ends_token(c) && c != '/') {
                self.at += 1;
            }
            let word: String = self.chars[start..self.at].iter().collect();
            return Err(SyntaxError::BadCommandName { word, pos: word_pos });
        }
        let args = match command.as_deref() {
            // `find` takes a filter expression, with or without a leading `where`.
            Some("find") => {
                self.skip_blanks();
                let pos = self.pos();
                self.keyword(&["where"]);
                self.skip_blanks();
                if self.at_expr_end() {
                    Vec::new()
                } else {
                    vec![Arg::Where { expr: self.expr(&menu)?, pos }]
                }
            }
            Some(_) => self.args(&menu)?,
            None => Vec::new(),
        };
        Ok(Statement { menu, absolute, command, args, pos })
    }

    /// `(VALUE OP VALUE)` after `:if`.
    fn condition(&mut self) -> Result<Arg, SyntaxError> {
        self.skip_blanks();
        let pos = self.pos();
        if self.peek() != Some('(') {
            return Err(SyntaxError::Syntax { pos });
        }
        self.at += 1;
        self.skip_blanks();
        let left = self.value(&[])?;
        self.skip_blanks();
        let op = match (self.peek(), self.peek_at(1)) {
            (Some('!'), Some('=')) => (CmpOp::Ne, 2),
            (Some('='), _) => (CmpOp::Eq, 1),
            (Some('<'), _) => (CmpOp::Lt, 1),
            (Some('>'), _) => (CmpOp::Gt, 1),
            _ => return Err(SyntaxError::Syntax { pos: self.pos() }),
        };
        self.at += op.1;
        self.skip_blanks();
        let right = self.value(&[])?;
        self.skip_blanks();
        if self.peek() != Some(')') {
            return Err(SyntaxError::Syntax { pos: self.pos() });
        }
        self.at += 1;
        Ok(Arg::Cond { left, op: op.0, right, pos })
    }

    /// `{ statements }` (the opening brace is next).
    fn block(&mut self) -> Result<Value, SyntaxError> {
        let open = self.pos();
        self.at += 1;
        let mut body = Vec::new();
        loop {
            self.skip_separators();
            match self.peek() {
                None => return Err(SyntaxError::Syntax { pos: open }),
                Some('}') => {
                    self.at += 1;
                    return Ok(Value::Block(body));
                }
                Some(_) => {
                    body.push(self.statement(&[])?);
                    self.skip_blanks();
                    if !matches!(self.peek(), Some(';') | Some('\n') | Some('}')) {
                        return Err(SyntaxError::ExpectedEndOfCommand { pos: self.pos() });
                    }
                }
            }
        }
    }

    fn args(&mut self, menu: &[String]) -> Result<Vec<Arg>, SyntaxError> {
        let mut args = Vec::new();
        loop {
            self.skip_blanks();
            let pos = self.pos();
            match self.peek() {
                None | Some(';') | Some('\n') | Some(']') | Some('}') => return Ok(args),
                Some('"') | Some('[') => {
                    let value = self.value(menu)?;
                    args.push(Arg::Unnamed { value, pos });
                }
                Some(c) if is_name_char(c) || c == '*' || c == '/' => {
                    let start = self.at;
                    let name = self.name();
                    if name == "where" && matches!(self.peek(), None | Some(' ') | Some('\t')) {
                        let expr = self.expr(menu)?;
                        args.push(Arg::Where { expr, pos });
                        continue;
                    }
                    if !name.is_empty() && self.peek() == Some('=') {
                        self.at += 1;
                        let value = self.value(menu)?;
                        args.push(Arg::Named { name, value, pos });
                        continue;
                    }
                    // An unnamed bare value such as `detail`, `pvc-x`, `*1A`, `0,1`.
                    self.at = start;
                    let value = self.bare()?;
                    args.push(Arg::Unnamed { value, pos });
                }
                Some(_) => return Err(SyntaxError::ExpectedEndOfCommand { pos }),
            }
        }
    }

    /// A bare token up to whitespace or a delimiter.
    fn bare(&mut self) -> Result<Value, SyntaxError> {
        let start = self.at;
        while matches!(self.peek(), Some(c) if !ends_token(c)) {
            self.at += 1;
        }
        if self.at == start {
            return Err(SyntaxError::Syntax { pos: self.pos() });
        }
        Ok(Value::Text { text: self.chars[start..self.at].iter().collect(), quoted: false })
    }

    fn value(&mut self, menu: &[String]) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some('"') => self.quoted(),
            Some('[') => {
                self.at += 1;
                let inner = self.statement(menu)?;
                self.skip_blanks();
                if self.peek() != Some(']') {
                    return Err(SyntaxError::ExpectedEndOfCommand { pos: self.pos() });
                }
                self.at += 1;
                Ok(Value::Sub(Box::new(inner)))
            }
            Some('{') => self.block(),
            // `name=` followed by nothing is an empty value.
            None | Some(' ') | Some('\t') | Some(';') | Some('\n') | Some(']') | Some('}') => {
                Ok(Value::Text { text: String::new(), quoted: false })
            }
            _ => self.bare(),
        }
    }

    /// A double-quoted string with RouterOS escapes: `\"`, `\\`, `\$`, `\?`, `\_` (space),
    /// `\a \b \f \n \r \t \v`, and `\HH` (two hex digits).
    fn quoted(&mut self) -> Result<Value, SyntaxError> {
        let open = self.at;
        self.at += 1;
        // Bytes, because `\HH` escapes are bytes; decoded as UTF-8 at the closing quote.
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(SyntaxError::Syntax { pos: self.pos_of(open) }),
                Some('"') => {
                    self.at += 1;
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    return Ok(Value::Text { text, quoted: true });
                }
                Some('\\') => {
                    let escape_pos = self.pos();
                    self.at += 1;
                    let c = self.peek().ok_or(SyntaxError::Syntax { pos: escape_pos })?;
                    self.at += 1;
                    let byte = match c {
                        '"' | '\\' | '$' | '?' => c as u8,
                        '_' => b' ',
                        'a' => 0x07,
                        'b' => 0x08,
                        'f' => 0x0c,
                        'n' => b'\n',
                        'r' => b'\r',
                        't' => b'\t',
                        'v' => 0x0b,
                        h if h.is_ascii_hexdigit() => {
                            let l = self.peek().filter(|c| c.is_ascii_hexdigit());
                            let l = l.ok_or(SyntaxError::Syntax { pos: escape_pos })?;
                            self.at += 1;
                            let hex = [h as u8, l as u8];
                            let hex = std::str::from_utf8(&hex).expect("ASCII hex digits");
                            u8::from_str_radix(hex, 16).expect("two hex digits")
                        }
                        _ => return Err(SyntaxError::Syntax { pos: escape_pos }),
                    };
                    bytes.push(byte);
                }
                // An unescaped `$` starts a variable substitution in RouterOS; the subset
                // we accept has no variables, so it is an error rather than a silent literal.
                Some('$') => return Err(SyntaxError::Syntax { pos: self.pos() }),
                Some(c) => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    self.at += 1;
                }
            }
        }
    }

    fn at_expr_end(&self) -> bool {
        matches!(self.peek(), None | Some(';') | Some('\n') | Some(']') | Some(')') | Some('}'))
    }

    fn keyword(&mut self, words: &[&str]) -> bool {
        for w in words {
            let n = w.chars().count();
            let matches = self.chars[self.at..].iter().take(n).copied().eq(w.chars());
            let boundary = self.peek_at(n).is_none_or(|c| c.is_whitespace() || c == '(');
            let symbolic = !w.chars().all(|c| c.is_ascii_alphabetic());
            if matches && (boundary || symbolic) {
                self.at += n;
                return true;
            }
        }
        false
    }

    fn expr(&mut self, menu: &[String]) -> Result<Expr, SyntaxError> {
        let mut left = self.and_expr(menu)?;
        loop {
            self.skip_blanks();
            if self.keyword(&["or", "||"]) {
                let right = self.and_expr(menu)?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and_expr(&mut self, menu: &[String]) -> Result<Expr, SyntaxError> {
        let mut left = self.unary(menu)?;
        loop {
            self.skip_blanks();
            if self.at_expr_end() || self.keyword_ahead(&["or", "||"]) {
                return Ok(left);
            }
            self.keyword(&["and", "&&"]);
            let right = self.unary(menu)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn keyword_ahead(&mut self, words: &[&str]) -> bool {
        let save = self.at;
        let found = self.keyword(words);
        self.at = save;
        found
    }

    fn unary(&mut self, menu: &[String]) -> Result<Expr, SyntaxError> {
        self.skip_blanks();
        let pos = self.pos();
        match self.peek() {
            Some('!') => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary(menu)?)))
            }
            Some('(') => {
                self.at += 1;
                let inner = self.expr(menu)?;
                self.skip_blanks();
                if self.peek() != Some(')') {
                    return Err(SyntaxError::Syntax { pos: self.pos() });
                }
                self.at += 1;
                Ok(inner)
            }
            Some(c) if is_name_char(c) => {
                let property = self.name();
                let op = match (self.peek(), self.peek_at(1)) {
                    (Some('!'), Some('=')) => Some((CmpOp::Ne, 2)),
                    (Some('='), _) => Some((CmpOp::Eq, 1)),
                    (Some('~'), _) => Some((CmpOp::Regex, 1)),
                    (Some('<'), _) => Some((CmpOp::Lt, 1)),
                    (Some('>'), _) => Some((CmpOp::Gt, 1)),
                    _ => None,
                };
                match op {
                    Some((op, len)) => {
                        self.at += len;
                        let value = self.value(menu)?;
                        Ok(Expr::Cmp { property, op, value, pos })
                    }
                    None => Ok(Expr::Truthy { property, pos }),
                }
            }
            _ => Err(SyntaxError::Syntax { pos }),
        }
    }
}

/// Quotes `text` as a RouterOS double-quoted string that parses back to exactly `text`:
/// `"`, `\` and `$` are escaped, and every control or non-ASCII byte becomes `\HH`.
///
/// Bytes above 0x7F are escaped one by one too (RouterOS strings are byte strings), so what
/// reaches the device is pure printable ASCII whatever the input.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' | b'$' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\{byte:02X}")),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

#[cfg(test)]
#[path = "syntax_tests.rs"]
pub(crate) mod tests;
