//! Tests of the mapping as a whole.

use super::*;
use serde_json::json;

fn errs(text: &str) -> MappingError {
    Mapping::parse(text, "m.toml").unwrap_err()
}

#[test]
fn probe() {
    for t in [
        "object = \"O\"\nexternal_id = \"X\"\n[fields]\n\"name\" = { crm = \"Name\", directon = \"both\" }\n",
        "object = \"O\"\nexternal_id = \"X\"\nbogus = 1\n",
        "object = \"O\"\n",
        "object = \"O\"\nexternal_id = \"X\"\n[fields]\n\"name\" = { crm = \"Name\", direction = \"tocrm\" }\n",
        "object = \"O\"\nexternal_id = \"X\"\n[fields]\n\"name\" = { crm = 3 }\n",
        "object = \"O\"\nexternal_id = \"X\"\n[stages]\nrecieved = { A = 1 }\n",
        "object = \"O\"\nexternal_id = \"X\"\n[fields.\"name\"]\ncrm = \"Name\"\n\nowner = \"me\"\n",
        "object = \"O\"\nexternal_id = \n",
    ] {
        println!("{}", errs(t));
    }
}
