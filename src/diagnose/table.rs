//! The plain text tables of the CLI (`status`, `jobs`, `locks`, `cooldowns`), rendered by
//! comfy-table: no borders, two spaces between columns, a header row, lines without
//! trailing blanks, so `grep` and `awk` still work on them.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table};

/// Renders `rows` under `header`; the columns whose index is in `right` are right-aligned
/// (numbers). Every row is padded or cut to the header's width.
pub fn render(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
    right: &[usize],
) -> String {
    let mut table = Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        // Never wrap to the terminal: a line per row, whatever the width.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        let mut row = row;
        row.resize(header.len(), String::new());
        table.add_row(row);
    }
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        column.set_constraint(ColumnConstraint::ContentWidth);
        if right.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_without_borders_or_trailing_blanks() {
        let text = super::render(
            &["NAME", "COUNT", "NOTE"],
            vec![
                vec!["a".to_string(), "7".to_string(), String::new()],
                vec!["longer".to_string(), "1234".to_string(), "x y".to_string()],
            ],
            &[1],
        );
        assert_eq!(
            text,
            "NAME    COUNT  NOTE\na           7\nlonger   1234  x y\n"
        );
    }
}
