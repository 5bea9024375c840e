//! The scripting the client's one-line operations use: `:len`, `:error`, and
//! `:if (VALUE OP VALUE) do={ ... } else={ ... }`. As in RouterOS, `:error` stops the whole
//! line with its text, and values compare as numbers when both are numbers.

use routeros::syntax::{CmpOp, Statement, Value};

use crate::exec::{Exec, ExecError, RValue, failure, split_args};

impl Exec<'_> {
    /// `:len VALUE`: the number of items of a list (found ids, rows), or of characters.
    pub(crate) fn len(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let Some((value, _)) = args.unnamed.first() else {
            return Err(failure("missing value for :len"));
        };
        let n = match self.eval(value)? {
            RValue::Nothing => 0,
            RValue::Text(t) => t.chars().count(),
            RValue::Ids(ids) => ids.len(),
            RValue::Rows(rows) => rows.len(),
            RValue::Object(o) => o.len(),
        };
        Ok(RValue::Text(n.to_string()))
    }

    /// `:error TEXT`: fails the line with TEXT.
    pub(crate) fn error(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let text = match args.unnamed.first() {
            Some((value, _)) => self.text(value)?,
            None => String::new(),
        };
        Err(ExecError::Message(text))
    }

    /// `:if (COND) do={...} else={...}`.
    pub(crate) fn script_if(&mut self, stmt: &Statement) -> Result<RValue, ExecError> {
        let args = split_args(stmt);
        let Some((left, op, right)) = args.cond else {
            return Err(failure("missing condition for :if"));
        };
        let (left, right) = (self.text(left)?, self.text(right)?);
        let holds = match (left.parse::<i64>(), right.parse::<i64>()) {
            (Ok(l), Ok(r)) => compare(l.cmp(&r), op),
            _ => compare(left.cmp(&right), op),
        };
        let branch = if holds { "do" } else { "else" };
        match args.named.get(branch) {
            Some((Value::Block(body), _)) => {
                for s in body {
                    self.top(s)?;
                }
                Ok(RValue::Nothing)
            }
            Some(_) => Err(failure(format!("{branch} needs a {{ block }}"))),
            None => Ok(RValue::Nothing),
        }
    }
}

fn compare(order: std::cmp::Ordering, op: CmpOp) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => order == Equal,
        CmpOp::Ne => order != Equal,
        CmpOp::Lt => order == Less,
        CmpOp::Gt => order == Greater,
        CmpOp::Regex => false,
    }
}
