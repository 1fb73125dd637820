//! `describe` of an sObject: its fields, types and picklist values.

use serde_json::{Value, json};

use super::schema::FType;
use super::store::SfState;

impl SfState {
    pub(super) fn describe(&self, o: usize, version: &str) -> Value {
        let obj = &self.objects[o];
        let fields: Vec<Value> = obj
            .fields
            .iter()
            .map(|fl| {
                let (ty, soap) = fl.ty.soap_type();
                let (picklist, restricted) = match &fl.ty {
                    FType::Picklist { values, restricted } => (
                        values.iter().map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v})).collect::<Vec<_>>(),
                        *restricted,
                    ),
                    _ => (Vec::new(), false),
                };
                let length = match fl.ty {
                    FType::Str(n) | FType::TextArea(n) => n,
                    FType::Id | FType::Reference(_) => 18,
                    FType::Email => 80,
                    FType::Phone => 40,
                    FType::Url => 255,
                    FType::Picklist { .. } => 255,
                    _ => 0,
                };
                json!({
                    "name": fl.name, "label": fl.label, "type": ty, "soapType": soap, "length": length,
                    "custom": fl.name.ends_with("__c"), "externalId": fl.external_id, "unique": fl.external_id,
                    "idLookup": fl.external_id || fl.name == "Id", "nillable": !fl.required && fl.createable,
                    "createable": fl.createable, "updateable": fl.updateable, "filterable": true, "sortable": true,
                    "picklistValues": picklist, "restrictedPicklist": restricted,
                    "referenceTo": match fl.ty { FType::Reference(t) => vec![t], _ => vec![] },
                    "defaultedOnCreate": matches!(fl.ty, FType::Bool) || fl.name == "Id",
                })
            })
            .collect();
        json!({
            "name": obj.name, "label": obj.label, "labelPlural": format!("{}s", obj.label), "keyPrefix": obj.prefix,
            "custom": false, "createable": obj.writable, "updateable": obj.writable, "deletable": obj.writable,
            "queryable": true, "fields": fields,
            "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", obj.name),
                     "describe": format!("/services/data/{version}/sobjects/{}/describe", obj.name),
                     "rowTemplate": format!("/services/data/{version}/sobjects/{}/{{ID}}", obj.name)},
        })
    }
}
