//! What can be wrong with a manifest: typed problems with their paths, and the parse error.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A field of a mapping.
    Field(String),
    /// An element of a list.
    Index(usize),
}

/// Where in the document a problem is, displayed like `hosts[0].services[1].engine`.
///
/// The empty path (the document itself) displays as `(document)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(Vec<PathSegment>);

impl FieldPath {
    /// The path of the document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path followed by the field `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Self {
        self.with(PathSegment::Field(name.to_owned()))
    }

    /// This path followed by the list element `index`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        self.with(PathSegment::Index(index))
    }

    /// The steps of this path.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// The list indices along this path (`hosts[2].services[0].url` gives `[2, 0]`): sorting problems by
    /// them groups each host's, service's and model's problems in document order.
    pub fn indices(&self) -> Vec<usize> {
        self.0
            .iter()
            .filter_map(|segment| match segment {
                PathSegment::Index(index) => Some(*index),
                PathSegment::Field(_) => None,
            })
            .collect()
    }

    fn with(&self, segment: PathSegment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Self(segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Field(name) if position == 0 => f.write_str(name)?,
                PathSegment::Field(name) => write!(f, ".{name}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Why a URL in the manifest is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// The text is not a URL at all (relative URLs included).
    #[error("{0}")]
    Unparsable(#[from] url::ParseError),
    /// The scheme is not `http` or `https`.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// The URL names no host.
    #[error("it names no host")]
    NoHost,
}

/// What is wrong at a path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The value has the wrong type, e.g. a list where a string belongs.
    #[error("must be {expected}")]
    WrongType {
        /// What belongs there, e.g. "a string", "a mapping".
        expected: &'static str,
    },
    /// The value is not one of a closed set of names.
    #[error("must be one of [{}], got {got:?}", allowed.join(", "))]
    NotOneOf {
        /// The accepted names.
        allowed: &'static [&'static str],
        /// What the document says.
        got: String,
    },
    /// A required field is absent or empty.
    #[error("is required")]
    Missing,
    /// The manifest format version is not one this crate reads.
    #[error("must be {supported}, got {got}")]
    UnsupportedVersion {
        /// The supported version.
        supported: u32,
        /// What the document says.
        got: u32,
    },
    /// A string is longer than allowed.
    #[error("must be at most {max} characters, got {len}")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list (or the manifest as a whole) has too many entries.
    #[error("must have at most {max} {what}, got {count}")]
    TooMany {
        /// What is counted, e.g. "hosts".
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A value that must be unique is used twice.
    #[error("duplicate {what} {value:?} (first used at {first})")]
    Duplicate {
        /// What must be unique, e.g. "host id".
        what: &'static str,
        /// The repeated value.
        value: String,
        /// Where it was first used.
        first: FieldPath,
    },
    /// A URL is not an absolute http(s) URL.
    #[error("must be an absolute http(s) URL: {0}")]
    BadUrl(UrlProblem),
    /// A model has neither `id` nor `hf`.
    #[error("needs a served id: set `id` or `hf`")]
    NoServedId,
    /// A number is outside its range.
    #[error("must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The smallest accepted value.
        min: f64,
        /// The largest accepted value.
        max: f64,
        /// What the document says.
        got: f64,
    },
    /// A login in an access list is not shaped like a GitHub login.
    #[error("is not a GitHub login: {0:?}")]
    BadLogin(String),
}

/// One problem in a manifest: where, and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct Problem {
    /// Where it is.
    pub path: FieldPath,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem of `kind` at `path`.
    pub fn new(path: FieldPath, kind: ProblemKind) -> Self {
        Self { path, kind }
    }
}

/// Every problem found in a manifest, in document order as far as possible. Never empty when
/// returned as an error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValidationErrors(Vec<Problem>);

impl ValidationErrors {
    /// Wraps a list of problems.
    pub fn new(problems: Vec<Problem>) -> Self {
        Self(problems)
    }

    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        &self.0
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when there are no problems, else `Err(self)`.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl IntoIterator for ValidationErrors {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One problem per line.
impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, problem) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// The syntax a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (the usual `agent.yaml`).
    Yaml,
    /// JSON.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

/// Where in the text a syntax error is, when the parser says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPosition {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl fmt::Display for TextPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a manifest could not be read or accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The document is over the size limit; it was not parsed.
    #[error("manifest is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The text is not well-formed YAML or JSON.
    #[error("{format} syntax error{}: {message}", position.map(|p| format!(" at {p}")).unwrap_or_default())]
    Syntax {
        /// The syntax it was read as.
        format: Format,
        /// The parser's message.
        message: String,
        /// Where, if the parser says.
        position: Option<TextPosition>,
    },
    /// The document is well-formed but breaks rules: every problem, each with its path.
    #[error("manifest has {count} problem(s):\n{0}", count = .0.len())]
    Invalid(ValidationErrors),
}

impl ManifestError {
    /// The rule problems, if that is what this error is.
    pub fn problems(&self) -> Option<&ValidationErrors> {
        match self {
            Self::Invalid(problems) => Some(problems),
            Self::TooLarge { .. } | Self::Syntax { .. } => None,
        }
    }

    /// The error as lines for a person: one per problem (a single line for size and syntax errors).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems
                .problems()
                .iter()
                .map(ToString::to_string)
                .collect(),
            Self::TooLarge { .. } | Self::Syntax { .. } => vec![self.to_string()],
        }
    }
}

impl From<ValidationErrors> for ManifestError {
    fn from(problems: ValidationErrors) -> Self {
        Self::Invalid(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_like_accessors() {
        let path = FieldPath::root()
            .field("hosts")
            .index(0)
            .field("services")
            .index(1)
            .field("engine");
        assert_eq!(path.to_string(), "hosts[0].services[1].engine");
        assert_eq!(FieldPath::root().to_string(), "(document)");
    }

    #[test]
    fn not_one_of_lists_the_names() {
        let problem = Problem::new(
            FieldPath::root().field("engine"),
            ProblemKind::NotOneOf {
                allowed: &["vllm", "ollama"],
                got: "foo".into(),
            },
        );
        assert_eq!(
            problem.to_string(),
            r#"engine: must be one of [vllm, ollama], got "foo""#
        );
    }

    #[test]
    fn syntax_error_shows_position_when_known() {
        let error = ManifestError::Syntax {
            format: Format::Yaml,
            message: "bad".into(),
            position: Some(TextPosition { line: 3, column: 7 }),
        };
        assert_eq!(
            error.to_string(),
            "YAML syntax error at line 3, column 7: bad"
        );
    }
}
