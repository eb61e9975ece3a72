//! The reference agent's edit cases (`agent/agentfiles` tests: matching passes, whitespace and
//! line endings, ending normalisation, collapse, level-aware re-indentation, rejections, hints),
//! ported as tables against [`apply`]. The HTTP-level cases live in `tests/files.rs`.

use super::splice::{indent_gcd, indent_level, indent_unit, translate_indent};
use super::*;

/// `(search, replace, replace_all)`.
type E<'a> = (&'a str, &'a str, bool);
/// `(name, content, edits, expected)`.
type Case<'a> = (&'a str, &'a str, &'a [E<'a>], &'a str);
/// `(name, content, search, replace, wanted parts, unwanted parts)`.
type HintCase<'a> = (&'a str, String, &'a str, &'a str, Vec<String>, Vec<&'a str>);

/// Applies `edits` in order, like one file entry of an edit request.
fn run(content: &str, edits: &[(&str, &str, bool)]) -> Result<String, EditError> {
    let mut out = content.to_owned();
    for &(search, replace, replace_all) in edits {
        out = apply(
            &out,
            Edit {
                search,
                replace,
                replace_all,
            },
        )?;
    }
    Ok(out)
}

#[track_caller]
fn ok(name: &str, content: &str, edits: &[(&str, &str, bool)], want: &str) {
    match run(content, edits) {
        Ok(got) => assert_eq!(got, want, "{name}"),
        Err(e) => panic!("{name}: {e}"),
    }
}

#[track_caller]
fn rejects(name: &str, content: &str, edits: &[(&str, &str, bool)], want_sub: &str) {
    match run(content, edits) {
        Ok(got) => panic!("{name}: expected an error, got {got:?}"),
        Err(e) => assert!(e.to_string().contains(want_sub), "{name}: {e}"),
    }
}

#[test]
fn basic_edits() {
    ok("Edit1", "foo bar", &[("foo", "bar", false)], "bar bar");
    rejects(
        "EditEditAmbiguous",
        "foo bar",
        &[("foo", "bar", false), ("bar", "qux", false)],
        "matches 2 occurrences",
    );
    ok(
        "EditEditReplaceAll",
        "foo bar",
        &[("foo", "bar", false), ("bar", "qux", true)],
        "qux qux",
    );
    ok(
        "Multiline",
        "foo\nbar\nbaz\nqux",
        &[("bar\nbaz", "frob", false)],
        "foo\nfrob\nqux",
    );
    ok(
        "TrailingWhitespace",
        "foo   \nbar\t\t\nbaz",
        &[("foo\nbar\nbaz", "replaced", false)],
        "replaced   ",
    );
    ok(
        "TabsVsSpaces",
        "\tif true {\n\t\tfoo()\n\t}",
        &[(
            "    if true {\n        foo()\n    }",
            "\tif true {\n\t\tbar()\n\t}",
            false,
        )],
        "\tif true {\n\t\tbar()\n\t}",
    );
    ok(
        "DifferentIndentDepth",
        "\t\t\tdeep()\n\t\t\tnested()",
        &[(
            "\tdeep()\n\tnested()",
            "\t\t\tdeep()\n\t\t\tchanged()",
            false,
        )],
        "\t\t\tdeep()\n\t\t\tchanged()",
    );
    ok(
        "ExactMatchPreferred",
        "hello world",
        &[("hello world", "goodbye world", false)],
        "goodbye world",
    );
    rejects(
        "NoMatchErrors",
        "original content",
        &[("this does not exist in the file", "whatever", false)],
        "search string not found in file",
    );
    rejects(
        "AmbiguousExactMatch",
        "foo bar foo baz foo",
        &[("foo", "qux", false)],
        "matches 3 occurrences",
    );
    ok(
        "ReplaceAllExact",
        "foo bar foo baz foo",
        &[("foo", "qux", true)],
        "qux bar qux baz qux",
    );
    ok(
        "ReplaceAllFuzzyTrailing",
        "hello   \nworld\nhello   \nagain",
        &[("hello\n", "bye\n", true)],
        "bye   \nworld\nbye   \nagain",
    );
    ok(
        "ReplaceAllFuzzyIndent",
        "\t\talpha\n\t\tbeta\n\t\talpha\n\t\tgamma",
        &[("    alpha\n", "\t\tREPLACED\n", true)],
        "\t\tREPLACED\n\t\tbeta\n\t\tREPLACED\n\t\tgamma",
    );
    ok(
        "MixedWhitespaceMultiline",
        "func main() {\n\tresult := compute()\n\tfmt.Println(result)\n}",
        &[(
            "  result := compute()\n  fmt.Println(result)\n",
            "\tresult := compute()\n\tlog.Println(result)\n",
            false,
        )],
        "func main() {\n\tresult := compute()\n\tlog.Println(result)\n}",
    );
    ok(
        "DiffRequestedMultiEditSameFile",
        "one\ntwo\nthree\n",
        &[("one", "ONE", false), ("three", "THREE", false)],
        "ONE\ntwo\nTHREE\n",
    );
}

#[test]
fn endings_and_whitespace() {
    let cases: &[Case] = &[
        (
            "CRLF_Content_LFSearch_Delete",
            "foo\r\nline\r\nbar\r\n",
            &[("line\n", "", false)],
            "foo\r\nbar\r\n",
        ),
        (
            "TrailingWhitespace_Delete",
            "foo\nline   \nbar\n",
            &[("line\n", "", false)],
            "foo\nbar\n",
        ),
        (
            "Pass1_SearchNoNewline_ExactSubstring",
            "foo\nfirst line\nbar\n",
            &[("first line", "LINE", false)],
            "foo\nLINE\nbar\n",
        ),
        (
            "FuzzyMatchingWhitespace_FileEndingWins",
            "foo\nkey\nbar\n",
            &[("key ", "KEY ", false)],
            "foo\nKEY\nbar\n",
        ),
        (
            "Pass1_LastLineNoNewline",
            "foo\nbar",
            &[("bar", "BAR", false)],
            "foo\nBAR",
        ),
        (
            "FuzzyIndent_CRLF_TwoSpaceSearch_FileTabWins",
            "foo\r\n\tline\r\nbar\r\n",
            &[("  line\n", "  LINE\n", false)],
            "foo\r\n\tLINE\r\nbar\r\n",
        ),
        (
            "FuzzyIndent_CRLF_SevenSpaceSearch_FileTabStillWins",
            "foo\r\n\tline\r\nbar\r\n",
            &[("       line\n", "       LINE\n", false)],
            "foo\r\n\tLINE\r\nbar\r\n",
        ),
        (
            "FuzzyIndent_CRLF_CallerRewritesIndent_ReplaceLeadingWins",
            "foo\r\n\tline\r\nbar\r\n",
            &[("  line\n", "    LINE\n", false)],
            "foo\r\n    LINE\r\nbar\r\n",
        ),
        (
            "ReplaceAll_FuzzyMatchingWhitespace_FileEndingWins",
            "key\nkey\nother\n",
            &[("key ", "KEY ", true)],
            "KEY\nKEY\nother\n",
        ),
        (
            "ReplaceAll_CRLF_LFSearch_FileEndingWins",
            "line one\r\nother\r\nline one\r\n",
            &[("line one\n", "LINE\n", true)],
            "LINE\r\nother\r\nLINE\r\n",
        ),
        (
            "CallerChosenFold",
            "foo\nline\nbar\n",
            &[("line\n", "LINE", false)],
            "foo\nLINEbar\n",
        ),
        (
            "CallerRewritesIndent_ReplaceLeadingWins",
            "foo\n\tline\n\tbar\n",
            &[("\tline\n", "  line\n", false)],
            "foo\n  line\n\tbar\n",
        ),
        (
            "Expansion_ExtraLinesTrackLastPair",
            "foo\n\tline\nbar\n",
            &[("    line\n", "    line\n    extra\n", false)],
            "foo\n\tline\n\textra\nbar\n",
        ),
        (
            "Collapse_ReplaceShorterThanSearch",
            "foo\nkeep\ndrop\nbar\n",
            &[("keep\ndrop\n", "keep\n", false)],
            "foo\nkeep\nbar\n",
        ),
        (
            "EmptyEndingWildcard_CRLFContent_FileEndingWins",
            "foo\r\nkey\r\nbar\r\n",
            &[("  key", "KEY", false)],
            "foo\r\nKEY\r\nbar\r\n",
        ),
        (
            "MultiLineReplaceAtEOFNoNewline_InteriorLinesKeepNewline",
            "foo\nbar",
            &[("foo\nbar\n", "foo\nbaz\nqux\n", false)],
            "foo\nbaz\nqux",
        ),
        (
            "EmptyBodyFuzzyReplace_NoWhitespaceGhost",
            "prefix\n  code  \nsuffix\n",
            &[("code\n", "\n", false)],
            "prefix\n\nsuffix\n",
        ),
        (
            "EmptyBodyInteriorAtEOFNoNewline_BothCarveOuts",
            "foo\nbar",
            &[("foo\nbar\n", "mid1\n\nmid2\n", false)],
            "mid1\n\nmid2",
        ),
        // Ending normalisation.
        (
            "CRLFFile_LFSearchReplace_Expansion",
            "line1\r\nline2\r\nline3\r\n",
            &[("line1\nline2\n", "line1\nINSERTED\nline2\n", false)],
            "line1\r\nINSERTED\r\nline2\r\nline3\r\n",
        ),
        (
            "CRLFFileNoEOL_LFSearchReplace_ExpansionAtEOF",
            "alpha\r\nbeta\r\ngamma",
            &[("gamma", "gamma\ndelta\nepsilon", false)],
            "alpha\r\nbeta\r\ngamma\r\ndelta\r\nepsilon",
        ),
        (
            "CRLFFileNoEOL_LFCallerExpandsFunctionBody",
            "package main\r\n\r\nfunc main() {\r\n\tprintln(\"hi\")\r\n}",
            &[(
                "\tprintln(\"hi\")\n}",
                "\tprintln(\"hi\")\n\tprintln(\"bye\")\n\treturn\n}",
                false,
            )],
            "package main\r\n\r\nfunc main() {\r\n\tprintln(\"hi\")\r\n\tprintln(\"bye\")\r\n\treturn\r\n}",
        ),
        (
            "LFFile_CRLFSearchReplace_FileLFWins",
            "one\ntwo\nthree\n",
            &[("one\r\ntwo\r\n", "ONE\r\nTWO\r\n", false)],
            "ONE\nTWO\nthree\n",
        ),
        (
            "CRLFFile_CRLFSearchReplace_SanityPreserved",
            "a\r\nb\r\nc\r\n",
            &[("a\r\nb\r\n", "A\r\nB\r\n", false)],
            "A\r\nB\r\nc\r\n",
        ),
        (
            "ReplaceAll_CRLFFile_LFCaller_Expansion",
            "key\r\nother\r\nkey\r\n",
            &[("key\n", "KEY\nEXTRA\n", true)],
            "KEY\r\nEXTRA\r\nother\r\nKEY\r\nEXTRA\r\n",
        ),
        (
            "CallerIntent_SearchMatchesFile_ReplaceEndingsHonored",
            "x\r\ny\r\nz\r\n",
            &[("x\r\ny\r\n", "X\nY\n", false)],
            "X\nY\nz\r\n",
        ),
        (
            "SingleLineSearch_MultiLineReplace_FileEndingWins",
            "a\r\nx\r\nb\r\n",
            &[("x", "X\nY", false)],
            "a\r\nX\r\nY\r\nb\r\n",
        ),
        (
            "SingleLineSearch_SingleLineReplace_NoEndingsToNormalize",
            "a\r\nx\r\nb\r\n",
            &[("x", "X", false)],
            "a\r\nX\r\nb\r\n",
        ),
        // Whitespace and line endings end to end.
        (
            "TabIndentedLine_ExactMatch",
            "\ttab indented line 1\n\ttab indented line 2\n    spaces line 3\n    spaces line 4\n\ttab indented line 5\n",
            &[(
                "\ttab indented line 1",
                "\ttab indented line 1 EDITED",
                false,
            )],
            "\ttab indented line 1 EDITED\n\ttab indented line 2\n    spaces line 3\n    spaces line 4\n\ttab indented line 5\n",
        ),
        (
            "TrailingWhitespace_Preserved_ByPass1",
            "line with trailing spaces   \nno trailing ws\n",
            &[(
                "line with trailing spaces",
                "line with trailing spaces EDITED",
                false,
            )],
            "line with trailing spaces EDITED   \nno trailing ws\n",
        ),
        (
            "RemoveBlankLines",
            "above\n\n\nbelow\n",
            &[("above\n\n\nbelow", "above\nbelow", false)],
            "above\nbelow\n",
        ),
        (
            "CRLF_Pass1_PreservesCRLF",
            "line one\r\nline two\r\nline three\r\n",
            &[("line two", "line two EDITED", false)],
            "line one\r\nline two EDITED\r\nline three\r\n",
        ),
        (
            "CRLF_FuzzyWithLF_FileEndingWins",
            "line one\r\nline two\r\nline three\r\n",
            &[(
                "line one\nline two\n",
                "line one EDITED\nline two EDITED\n",
                false,
            )],
            "line one EDITED\r\nline two EDITED\r\nline three\r\n",
        ),
        (
            "NoTrailingNewline_Preserved",
            "no trailing newline",
            &[("no trailing newline", "no trailing newline EDITED", false)],
            "no trailing newline EDITED",
        ),
        (
            "FuzzyIndent_FileIndentWins_NoLineFolding",
            "\titem one\n\titem two\n",
            &[("  item one\n", "  item one EDITED\n", false)],
            "\titem one EDITED\n\titem two\n",
        ),
        // Collapse keeps the next line.
        (
            "Minimal",
            "\tone\n\ttwo\n\tthree\n\tafter\n",
            &[("    one\n    two\n    three\n", "    ONE\n    TWO\n", false)],
            "\tONE\n\tTWO\n\tafter\n",
        ),
    ];
    for (name, content, edits, want) in cases {
        ok(name, content, edits, want);
    }
}

#[test]
fn collapse_does_not_join_the_next_line() {
    let content = "\tnameValidator := func(fl validator.FieldLevel) bool {\n\t\tf := fl.Field().Interface()\n\t\tstr, ok := f.(string)\n\t\tif !ok {\n\t\t\treturn false\n\t\t}\n\t\tvalid := codersdk.NameValid(str)\n\t\treturn valid == nil\n\t}\n";
    ok(
        "HarnessHttpapi",
        content,
        &[(
            "        f := fl.Field().Interface()\n        str, ok := f.(string)\n        if !ok {\n            return false\n        }\n        valid := codersdk.NameValid(str)",
            "        f := fl.Field().Interface()\n        str, _ := f.(string)\n        valid := codersdk.NameValid(str)",
            false,
        )],
        "\tnameValidator := func(fl validator.FieldLevel) bool {\n\t\tf := fl.Field().Interface()\n\t\tstr, _ := f.(string)\n\t\tvalid := codersdk.NameValid(str)\n\t\treturn valid == nil\n\t}\n",
    );
    ok(
        "Expansion_PreservesFileIndent",
        content,
        &[(
            "        f := fl.Field().Interface()\n        str, ok := f.(string)\n        if !ok {\n            return false\n        }\n        valid := codersdk.NameValid(str)",
            "        f := fl.Field().Interface()\n        str, ok := f.(string)\n        if !ok {\n            log.Println(\"type assertion failed\")\n            return false\n        }\n        valid := codersdk.NameValid(str)",
            false,
        )],
        "\tnameValidator := func(fl validator.FieldLevel) bool {\n\t\tf := fl.Field().Interface()\n\t\tstr, ok := f.(string)\n\t\tif !ok {\n\t\t\tlog.Println(\"type assertion failed\")\n\t\t\treturn false\n\t\t}\n\t\tvalid := codersdk.NameValid(str)\n\t\treturn valid == nil\n\t}\n",
    );
}

#[test]
fn rejections_leave_nothing_half_done() {
    rejects(
        "EmptySearch_Rejects",
        "hello\n",
        &[("", "X", false)],
        "search string must not be empty",
    );
    rejects(
        "EmptySearch_ReplaceAll_Rejects",
        "hello\n",
        &[("", "X", true)],
        "search string must not be empty",
    );
    rejects(
        "Ambiguous_SingleReplace_Rejects",
        "a\na\na\nother\n",
        &[("a", "A", false)],
        "matches 3 occurrences",
    );
    rejects(
        "NotFound_Rejects",
        "hello\nworld\n",
        &[("nonexistent\n", "X\n", false)],
        "search string not found",
    );
    rejects(
        "ContentMismatch_Rejects",
        "hello\n",
        &[("Hello\n", "HELLO\n", false)],
        "search string not found",
    );
    rejects(
        "BlankLineMismatch_Rejects",
        "above\n\n\nbelow\n",
        &[("above\nbelow\n", "above\nbelow\n", false)],
        "search string not found",
    );
    rejects(
        "BlankLinesAreSignificant_Rejects",
        "above\n\n\nbelow\n",
        &[("above\nbelow", "above\nbelow", false)],
        "search string not found",
    );
    rejects(
        "CallerIntent_SearchDoesNotMatchFileEnding_Rejects",
        "x\r\ny\r\nz\r\n",
        &[("x\ny\n", "X\r\nY\r\n", false)],
        "including whitespace, indentation, and line endings",
    );
}

#[test]
fn replace_all_with_fuzzy_indent_edits_every_depth() {
    // The reference pins this foot-gun as current behaviour: pass 3 matches both depths.
    let content = "package main\n\nfunc a() {\n\t\tif err != nil {\n\t\t\treturn err\n\t\t}\n\t\t\tif err != nil {\n\t\t\t\treturn err\n\t\t\t}\n}\n";
    ok(
        "ReplaceAll_FuzzyIndentGap",
        content,
        &[(
            "    if err != nil {\n        return err\n    }\n",
            "    if err != nil {\n        return fmt.Errorf(\"wrap: %w\", err)\n    }\n",
            true,
        )],
        "package main\n\nfunc a() {\n\t\tif err != nil {\n\t\t\treturn fmt.Errorf(\"wrap: %w\", err)\n\t\t}\n\t\t\tif err != nil {\n\t\t\t\treturn fmt.Errorf(\"wrap: %w\", err)\n\t\t\t}\n}\n",
    );
}

#[test]
fn inserted_lines_are_reindented_into_the_file_style() {
    let cases: &[(&str, &str, &str, &str, bool, &str)] = &[
        (
            "Red_WrapInBlock_TabFile_4spLLM",
            "func main() {\n\tfmt.Println(\"hello\")\n\tfmt.Println(\"world\")\n}\n",
            "    fmt.Println(\"hello\")\n    fmt.Println(\"world\")",
            "    fmt.Println(\"hello\")\n    if verbose {\n        fmt.Println(\"world\")\n    }",
            false,
            "func main() {\n\tfmt.Println(\"hello\")\n\tif verbose {\n\t\tfmt.Println(\"world\")\n\t}\n}\n",
        ),
        (
            "Red_WrapInBlock_2spFile_4spLLM",
            "function main() {\n  console.log('hello')\n  console.log('world')\n}\n",
            "    console.log('hello')\n    console.log('world')",
            "    console.log('hello')\n    if (verbose) {\n        console.log('world')\n    }",
            false,
            "function main() {\n  console.log('hello')\n  if (verbose) {\n    console.log('world')\n  }\n}\n",
        ),
        (
            "Red_SingleToMulti_ErrorHandling",
            "func main() {\n\tx := getValue()\n\tfmt.Println(x)\n}\n",
            "    x := getValue()",
            "    x, err := getValue()\n    if err != nil {\n        log.Fatal(err)\n    }",
            false,
            "func main() {\n\tx, err := getValue()\n\tif err != nil {\n\t\tlog.Fatal(err)\n\t}\n\tfmt.Println(x)\n}\n",
        ),
        (
            "Red_InsertNewBlock_AfterExisting",
            "func loadConfig() (*Config, error) {\n\tvar cfg Config\n\terr = json.Unmarshal(data, &cfg)\n\tif err != nil {\n\t\treturn nil, err\n\t}\n\n\treturn &cfg, nil\n}\n",
            "    var cfg Config\n    err = json.Unmarshal(data, &cfg)\n    if err != nil {\n        return nil, err\n    }\n\n    return &cfg, nil",
            "    var cfg Config\n    err = json.Unmarshal(data, &cfg)\n    if err != nil {\n        return nil, fmt.Errorf(\"unmarshal: %w\", err)\n    }\n    if err := cfg.Validate(); err != nil {\n        return nil, fmt.Errorf(\"validate: %w\", err)\n    }\n\n    return &cfg, nil",
            false,
            "func loadConfig() (*Config, error) {\n\tvar cfg Config\n\terr = json.Unmarshal(data, &cfg)\n\tif err != nil {\n\t\treturn nil, fmt.Errorf(\"unmarshal: %w\", err)\n\t}\n\tif err := cfg.Validate(); err != nil {\n\t\treturn nil, fmt.Errorf(\"validate: %w\", err)\n\t}\n\n\treturn &cfg, nil\n}\n",
        ),
        (
            "Red_ReplaceAll_Pass3_Expansion",
            "func handlers() {\n\thttp.HandleFunc(\"/a\", func(w http.ResponseWriter, r *http.Request) {\n\t\tdata := readBody(r)\n\t\tprocess(data)\n\t})\n\thttp.HandleFunc(\"/b\", func(w http.ResponseWriter, r *http.Request) {\n\t\tdata := readBody(r)\n\t\tprocess(data)\n\t})\n}\n",
            "        data := readBody(r)\n        process(data)",
            "        data := readBody(r)\n        if data == nil {\n            return\n        }\n        process(data)",
            true,
            "func handlers() {\n\thttp.HandleFunc(\"/a\", func(w http.ResponseWriter, r *http.Request) {\n\t\tdata := readBody(r)\n\t\tif data == nil {\n\t\t\treturn\n\t\t}\n\t\tprocess(data)\n\t})\n\thttp.HandleFunc(\"/b\", func(w http.ResponseWriter, r *http.Request) {\n\t\tdata := readBody(r)\n\t\tif data == nil {\n\t\t\treturn\n\t\t}\n\t\tprocess(data)\n\t})\n}\n",
        ),
        // The reference locks these middle-substitution outputs (its CODAGT-214): rewritten
        // middle lines keep the caller's literal indent when it disagrees with the search.
        (
            "Lock_Unwrap_MiddleSubDisagreement",
            "func main() {\n\tif condition {\n\t\tdoSomething()\n\t\tdoMore()\n\t}\n}\n",
            "    if condition {\n        doSomething()\n        doMore()\n    }",
            "    doSomething()\n    doMore()",
            false,
            "func main() {\n\tdoSomething()\n    doMore()\n}\n",
        ),
        (
            "Lock_MiddleRewrite_DifferentNesting_Tab",
            "func transform(items []Item) []Result {\n\tvar results []Result\n\tfor _, item := range items {\n\t\tif item.Valid {\n\t\t\tresults = append(results, convert(item))\n\t\t}\n\t}\n\treturn results\n}\n",
            "    var results []Result\n    for _, item := range items {\n        if item.Valid {\n            results = append(results, convert(item))\n        }\n    }\n    return results",
            "    var results []Result\n    for _, item := range items {\n        result, err := convert(item)\n        if err != nil {\n            continue\n        }\n        results = append(results, result)\n    }\n    return results",
            false,
            "func transform(items []Item) []Result {\n\tvar results []Result\n\tfor _, item := range items {\n\t\tresult, err := convert(item)\n        if err != nil {\n            continue\n\t\t}\n\t\tresults = append(results, result)\n\t}\n\treturn results\n}\n",
        ),
        (
            "Lock_MiddleRewrite_DifferentNesting_2sp",
            "function transform(items) {\n  const results = [];\n  for (const item of items) {\n    if (item.valid) {\n      results.push(convert(item));\n    }\n  }\n  return results;\n}\n",
            "    const results = [];\n    for (const item of items) {\n        if (item.valid) {\n            results.push(convert(item));\n        }\n    }\n    return results;",
            "    const results = [];\n    for (const item of items) {\n        const result = convert(item);\n        if (!result) {\n            continue;\n        }\n        results.push(result);\n    }\n    return results;",
            false,
            "function transform(items) {\n  const results = [];\n  for (const item of items) {\n    const result = convert(item);\n        if (!result) {\n            continue;\n    }\n    results.push(result);\n  }\n  return results;\n}\n",
        ),
    ];
    for (name, content, search, replace, all, want) in cases {
        ok(name, content, &[(search, replace, *all)], want);
    }
}

const BASE: &str = "search string not found in file. Verify the search string matches the file \
    content exactly, including whitespace and indentation";

#[test]
fn failed_searches_carry_hints() {
    let dash = |n| "\u{2500}".repeat(n);
    let cases: Vec<HintCase> = vec![
        (
            "Inversion_HintIncludesSwapAndLine",
            "package main\n\nfunc adder(a int, b int) int { return a + b }\n\n// trailing comment\n".into(),
            "func adder(a, b int) int {\n\treturn a + b\n}\n",
            "func adder(a int, b int) int { return a + b }\n",
            vec![BASE.into(), r#"Did you swap "search" and "replace"? Your replace string appears at line 3"#.into()],
            vec![],
        ),
        (
            "Inversion_ThreeAnchors_AllListed",
            "a\nmatching block body of substantial length\nb\nmatching block body of substantial length\nc\nmatching block body of substantial length\nd\n".into(),
            "this search text is absent from the file\n",
            "matching block body of substantial length\n",
            vec![r#"Your replace string appears at line 2, 4, 6"#.into()],
            vec!["more"],
        ),
        (
            "Inversion_SevenAnchors_TruncatedWithAndMore",
            "matching block body of substantial length\n".repeat(7),
            "this search text is absent from the file\n",
            "matching block body of substantial length\n",
            vec!["appears at line 1, 2, 3, 4, 5 and 2 more".into()],
            vec![],
        ),
        (
            "Inversion_ShortReplace_TruncatedWithAndMore",
            "alpha\nbeta\nbeta\nbeta\nbeta\nbeta\nbeta\nbeta\ngamma\n".into(),
            "missing line that does not occur anywhere\n",
            "beta\n",
            vec!["appears at line 2, 3, 4, 5, 6 and 2 more".into()],
            vec![],
        ),
        (
            "Miscount_BoxDrawingDashes_HintNamesCodepoint",
            format!("<header>\n{{/* SECTION HEADING {} */}}\n<body/>\n", dash(37)),
            "",
            "{/* REPLACED */}\n",
            vec![BASE.into(), "Your search has 32 \"\u{2500}\" (U+2500); the file has 37 at line 2".into()],
            vec![],
        ),
        (
            "Miscount_ASCIIEquals_HintWorks",
            "title\nsection =======\nbody\n".into(),
            "section =====\n",
            "section *****\n",
            vec![r#"Your search has 5 "=" (U+003D); the file has 7 at line 2"#.into()],
            vec![],
        ),
        (
            "Miscount_TwoCandidates_BothListed",
            "section =======\nsection ===\n".into(),
            "section =====\n",
            "section *****\n",
            vec![r#"Your search has 5 "=" (U+003D); the file has 7 at line 1, 3 at line 2"#.into()],
            vec!["more"],
        ),
        (
            "Miscount_SixCandidates_TruncatedWithAndMore",
            "section ==\nsection ===\nsection ======\nsection =======\nsection ========\nsection =========\n".into(),
            "section =====\n",
            "section *****\n",
            vec![r#"Your search has 5 "=" (U+003D); the file has 2 at line 1, 3 at line 2, 6 at line 3, 7 at line 4, 8 at line 5 and 1 more"#.into()],
            vec![],
        ),
        (
            "Miscount_TwoDistinctChanges_NoHint",
            "first\na===b\nlast\n".into(),
            "a=====b!\n",
            "unused\n",
            vec![BASE.into()],
            vec!["Your search has", "the file has"],
        ),
        (
            "Miscount_Unrelated_NoHint",
            "package foo\n\nfunc bar() {}\n".into(),
            "this content is wholly different from the file\n",
            "unused\n",
            vec![BASE.into()],
            vec!["Your search has", "the file has"],
        ),
        (
            "Miscount_SuppressesInversion_WhenBothCouldFire",
            format!("<header>\n{{/* SECTION HEADING {} */}}\n<body>\ndoSomethingWithLongName(ctx)\n</body>\n", dash(8)),
            "",
            "doSomethingWithLongName(ctx)\n",
            vec!["Your search has 6 \"\u{2500}\" (U+2500); the file has 8 at line 2".into()],
            vec!["swap", "appears at line"],
        ),
        (
            "Inversion_DedupRepeatsOnOneLine",
            "prefix\nAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAA\nsuffix\n".into(),
            "absent search line not in file at all\n",
            "AAAAAAAAAAAAAAAAAAAA\n",
            vec!["appears at line 2".into()],
            vec!["line 2, 2", "more"],
        ),
        (
            "Inversion_TrimRightFallback_TrailingSpaces",
            "preamble\nmatching block body of substantial length   \ntrailer\n".into(),
            "absent search line not in file at all\n",
            "matching block body of substantial length\n",
            vec!["appears at line 2".into()],
            vec![],
        ),
        (
            "Inversion_TrimAllFallback_LeadingIndent",
            "preamble\n\t\tmatching block body of substantial length\ntrailer\n".into(),
            "absent search line not in file at all\n",
            "matching block body of substantial length\n",
            vec!["appears at line 2".into()],
            vec![],
        ),
        (
            "Miscount_SingleRuneDiff_Suppressed",
            "first\nxa\nlast\n".into(),
            "xab\n",
            "unused\n",
            vec![BASE.into()],
            vec!["Your search has", "the file has"],
        ),
        (
            "Miscount_TotalHintsCapped",
            "section ==\ndivider ++\nline ##\nheader @@\n".into(),
            "section ====\ndivider ++++\nline ####\nheader @@@@\n",
            "unused\n",
            vec![
                r#"Your search has 4 "=" (U+003D)"#.into(),
                r#"Your search has 4 "+" (U+002B)"#.into(),
                r##"Your search has 4 "#" (U+0023)"##.into(),
                "and 1 more".into(),
            ],
            vec![r#""@""#],
        ),
        (
            "Inversion_OverlappingMultilineMatch",
            "AAAAAAAAAAAAAAAAAAAA\nBBBBBBBBBBBBBBBBBBBB\nAAAAAAAAAAAAAAAAAAAA\nBBBBBBBBBBBBBBBBBBBB\nAAAAAAAAAAAAAAAAAAAA\n".into(),
            "absent search line not in file at all\n",
            "AAAAAAAAAAAAAAAAAAAA\nBBBBBBBBBBBBBBBBBBBB\nAAAAAAAAAAAAAAAAAAAA\n",
            vec!["appears at line 1, 3".into()],
            vec!["more"],
        ),
        (
            "Miscount_RuneOnlyInFile",
            "section ==bb\n".into(),
            "section ==\n",
            "section --\n",
            vec![r#"Your search has 0 "b" (U+0062); the file has 2 at line 1"#.into()],
            vec![],
        ),
        (
            "NoHints_BaseErrorOnly",
            "package foo\n\nfunc bar() {}\n".into(),
            "func zzzz() {}\n",
            "new\n",
            vec![BASE.into()],
            vec!["swap", "Your search has", "appears at line"],
        ),
    ];
    for (name, content, search, replace, want, not_want) in cases {
        // Two cases build their search from box-drawing dashes.
        let search = match name {
            "Miscount_BoxDrawingDashes_HintNamesCodepoint" => {
                format!("{{/* SECTION HEADING {} */}}\n", dash(32))
            }
            "Miscount_SuppressesInversion_WhenBothCouldFire" => {
                format!("{{/* SECTION HEADING {} */}}\n", dash(6))
            }
            _ => search.to_owned(),
        };
        let err = run(&content, &[(&search, replace, false)])
            .expect_err(name)
            .to_string();
        assert!(err.starts_with(BASE), "{name}: {err}");
        for w in &want {
            assert!(err.contains(w.as_str()), "{name}: missing {w:?} in {err:?}");
        }
        for n in &not_want {
            assert!(!err.contains(n), "{name}: unwanted {n:?} in {err:?}");
        }
    }
}

#[test]
fn indent_helpers() {
    for (lines, want) in [
        (vec![], None),
        (vec!["foo\n", "bar\n"], None),
        (vec!["\tfoo\n", "\t\tbar\n"], Some("\t")),
        (vec!["    foo\n", "        bar\n"], Some("    ")),
        (vec!["  foo\n", "    bar\n"], Some("  ")),
        (vec!["    foo\n", "      bar\n"], Some("  ")),
        (vec!["\tfoo\n", "    bar\n"], None),
        (vec!["\t    foo\n"], None),
        (vec![" \tfoo\n"], None),
        (vec!["    foo\n", "  \n", "    bar\n"], Some("    ")),
        (vec!["  \n", "    \n"], None),
        (vec!["\n", "    foo\n"], Some("    ")),
    ] {
        assert_eq!(indent_unit(&lines).as_deref(), want, "{lines:?}");
    }
    for (a, b, want) in [
        (0, 0, 0),
        (0, 4, 4),
        (4, 0, 4),
        (4, 4, 4),
        (3, 5, 1),
        (4, 6, 2),
        (8, 12, 4),
        (2, 4, 2),
    ] {
        assert_eq!(indent_gcd(a, b), want);
    }
    for (lead, unit, want) in [
        ("", "    ", Some(0)),
        ("    ", "    ", Some(1)),
        ("      ", "  ", Some(3)),
        ("\t\t", "\t", Some(2)),
        ("   ", "    ", None),
        ("\t ", "  ", None),
    ] {
        assert_eq!(indent_level(lead, unit), want, "{lead:?} {unit:?}");
    }
    for (r, s, c, su, fu, want) in [
        ("        ", "    ", "\t", "    ", "\t", Some("\t\t")),
        ("    ", "    ", "\t", "    ", "\t", Some("\t")),
        ("", "        ", "\t", "    ", "\t", None),
        ("   ", "    ", "\t", "    ", "\t", None),
        ("        ", "    ", "    ", "    ", "  ", Some("      ")),
        ("    ", "  ", "\t", "  ", "\t", Some("\t\t")),
    ] {
        assert_eq!(translate_indent(r, s, c, su, fu).as_deref(), want);
    }
}

#[test]
fn splitting_matches_go_split_after() {
    assert_eq!(split_after(""), [""]);
    assert_eq!(split_after("a"), ["a"]);
    assert_eq!(split_after("a\n"), ["a\n", ""]);
    assert_eq!(split_after("a\r\nb"), ["a\r\n", "b"]);
    assert_eq!(split_lines("a\nb\n"), ["a\n", "b\n"]);
}
