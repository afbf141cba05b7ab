use super::*;

pub(super) async fn keys(target: &Target, ui: Ui, command: KeysCommand) -> Outcome {
    let client = target.client()?;
    match command {
        KeysCommand::List => {
            let keys = client.keys().await?;
            if ui.json {
                return ui.print_list(&keys).map_err(Failure::from);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        printable(&k.name),
                        printable(&format!("{}…", k.prefix)),
                        k.scopes.join(","),
                        when(&k.created_at),
                        k.last_used_at
                            .as_ref()
                            .map(when)
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "NAME",
                    "PREFIX",
                    "SCOPES",
                    "CREATED (UTC)",
                    "LAST USED",
                ],
                &rows,
            )
            .map_err(Failure::from)
        }
        KeysCommand::Create { name, scopes } => {
            let scopes: Vec<&str> = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let created = client.create_key(&name, &scopes).await?;
            if ui.json {
                return ui.print_json(&created).map_err(Failure::from);
            }
            println!("{}", created.secret);
            eprintln!(
                "Created key {} ({}) with scopes {}. The secret above is shown this once: keep it safe.",
                created.key.id,
                printable(&created.key.name),
                created.key.scopes.join(",")
            );
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await?;
            if ui.json {
                return ui
                    .print_json(&serde_json::json!({ "id": id, "revoked": true }))
                    .map_err(Failure::from);
            }
            println!("Revoked key {id}.");
            Ok(())
        }
    }
}
