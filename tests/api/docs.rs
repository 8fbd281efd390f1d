//! Swagger UI, the OpenAPI document and its committed copy, and JSON errors
//! for routes that do not exist.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

/// Fails when `openapi/openapi.json` differs from the generated document.
/// `UPDATE_OPENAPI=1 cargo test openapi` rewrites it.
#[tokio::test]
async fn committed_openapi_matches_the_generated_document() {
    let generated = order_tracker::api::docs::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date; run `UPDATE_OPENAPI=1 cargo test openapi` and commit it"
    );

    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(&committed).unwrap());
}

#[tokio::test]
async fn openapi_is_3_1_and_every_operation_is_described() {
    let doc: Value = serde_json::from_str(&order_tracker::api::docs::openapi_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/status",
        "/api/v1/orders/{id}/track",
        "/api/v1/orders/{id}/simulate-workflow",
        "/api/v1/orders/system/stats",
        "/api/v1/health",
        "/api/v1/orders/initiate",
        "/api/v1/orders/followup",
        "/api/v1/orders/tracking/status",
        "/api/v1/orders/tracking/{order_req_id}",
        "/api/v1/orders/{id}/stop",
        "/api/v1/processor/tracking/status",
        "/api/v1/processor/tracking/{order_req_id}",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let name = format!("{method} {path}");
            assert!(operation["summary"].is_string(), "{name} has a summary");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(
                    parameter["description"].is_string(),
                    "{name}: {parameter} is described"
                );
            }
            for (code, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"].is_string(),
                    "{name} {code} is described"
                );
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{name} {code} uses the error shape"
                    );
                }
            }
        }
    }
}

/// utoipa takes only literals for a parameter's `minimum` and `maximum`, so
/// the documented `speed` range is written twice; it must be the enforced one.
#[test]
fn documented_speed_range_is_the_enforced_one() {
    use order_tracker::domain::workflow::{MAX_SPEED, MIN_SPEED};
    let doc: Value = serde_json::from_str(&order_tracker::api::docs::openapi_json()).unwrap();
    for path in [
        "/api/v1/orders/initiate",
        "/api/v1/orders/{id}/simulate-workflow",
    ] {
        let speed = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == "speed")
            .unwrap_or_else(|| panic!("{path} documents speed"));
        assert_eq!(
            speed["schema"]["minimum"].as_f64(),
            Some(MIN_SPEED),
            "{path}"
        );
        assert_eq!(
            speed["schema"]["maximum"].as_f64(),
            Some(MAX_SPEED),
            "{path}"
        );
    }
}

/// Every order id the API reads, in a path or a body, is documented as the
/// `OrderId` schema, which carries the pattern the server enforces (the unit
/// tests beside `OrderId` check the pattern against the parser).
#[test]
fn every_order_id_is_documented_with_the_enforced_pattern() {
    use order_tracker::domain::order::{MAX_ID_LEN, ORDER_ID_PATTERN};
    let doc: Value = serde_json::from_str(&order_tracker::api::docs::openapi_json()).unwrap();
    let schema = &doc["components"]["schemas"]["OrderId"];
    assert_eq!(schema["pattern"], json!(ORDER_ID_PATTERN));
    assert_eq!(schema["maxLength"], json!(MAX_ID_LEN));
    assert_eq!(schema["minLength"], json!(1));
    let reference = json!({"$ref": "#/components/schemas/OrderId"});
    let mut path_ids = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                // Store, substitution and issue ids are other identifiers.
                if parameter["in"] == "path"
                    && ["id", "order_id"].contains(&parameter["name"].as_str().unwrap_or_default())
                {
                    assert_eq!(parameter["schema"], reference, "{method} {path}");
                    path_ids += 1;
                }
            }
        }
    }
    // Eight operations take an id in their path today.
    assert!(path_ids >= 8, "only {path_ids} path ids seen");
    let schemas = &doc["components"]["schemas"];
    for field in [
        &schemas["InitiateInput"]["properties"]["order_req_id"],
        &schemas["FollowUpInput"]["properties"]["order_req_id"],
        &schemas["NewOrderInput"]["properties"]["id"]["oneOf"][1],
    ] {
        assert_eq!(field["$ref"], reference["$ref"], "{field}");
    }
}

/// Whether a media type object shows an example, itself or through the
/// component schema it references.
fn has_example(doc: &Value, media: &Value) -> bool {
    if !media["example"].is_null() || !media["examples"].is_null() {
        return true;
    }
    let Some(reference) = media["schema"]["$ref"].as_str() else {
        return false;
    };
    let name = reference.trim_start_matches("#/components/schemas/");
    let schema = &doc["components"]["schemas"][name];
    !schema["example"].is_null() || !schema["examples"].is_null()
}

#[tokio::test]
async fn every_body_parameter_and_error_has_an_example() {
    let doc: Value = serde_json::from_str(&order_tracker::api::docs::openapi_json()).unwrap();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let name = format!("{method} {path}");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let shown =
                    !parameter["example"].is_null() || !parameter["schema"]["examples"].is_null();
                assert!(
                    shown,
                    "{name}: parameter {} has an example",
                    parameter["name"]
                );
            }
            if let Some(media) = operation["requestBody"]["content"]["application/json"].as_object()
            {
                assert!(
                    has_example(&doc, &Value::Object(media.clone())),
                    "{name}: request body has an example"
                );
            }
            for (code, response) in operation["responses"].as_object().unwrap() {
                let Some(media) = response["content"]["application/json"].as_object() else {
                    continue;
                };
                let media = Value::Object(media.clone());
                if code.starts_with('4') || code.starts_with('5') {
                    // The shared ErrorBody example would say the wrong thing here.
                    assert!(
                        !media["example"].is_null(),
                        "{name} {code} has its own error example"
                    );
                } else {
                    assert!(has_example(&doc, &media), "{name} {code} has an example");
                }
            }
        }
    }
}

#[tokio::test]
async fn swagger_ui_is_served_at_apidocs() {
    let app = spawn_app().await;
    let response = app.get("/apidocs/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
    let config = app.get("/apidocs/swagger-initializer.js").await;
    assert_eq!(config.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/nothing-here").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let response = app
        .client
        .delete(app.url("/api/v1/orders/101/track"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}
