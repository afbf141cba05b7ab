use super::*;

pub(super) fn split_provider(text: &str) -> Result<(&str, &str), String> {
    text.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("a provider is OPERATOR/NAME, got {text:?}"))
}

pub(super) async fn providers(target: &Target, ui: Ui, command: ProvidersCommand) -> Outcome {
    let client = target.client()?;
    match command {
        ProvidersCommand::List => {
            let providers = client.providers().await?;
            if ui.json {
                return ui.print_list(&providers).map_err(Failure::from);
            }
            if providers.is_empty() {
                println!("No providers yet.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = providers
                .iter()
                .map(|p| {
                    vec![
                        printable(&format!("{}/{}", p.operator, p.name)),
                        if p.online { "online" } else { "offline" }.to_owned(),
                        p.counts.in_flight.to_string(),
                        snippet(
                            &p.models
                                .iter()
                                .map(|m| m.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            60,
                        ),
                    ]
                })
                .collect();
            table(&["PROVIDER", "STATE", "IN FLIGHT", "MODELS"], &rows).map_err(Failure::from)
        }
        ProvidersCommand::Show { provider } => {
            let (operator, name) = split_provider(&provider)?;
            let profile = client.provider(operator, name).await?;
            if ui.json {
                return ui.print_json(&profile).map_err(Failure::from);
            }
            println!(
                "provider        {}/{}",
                printable(&profile.operator),
                printable(&profile.name)
            );
            println!(
                "state           {}",
                if profile.online { "online" } else { "offline" }
            );
            if let Some(seen) = &profile.last_seen {
                println!("last seen       {} UTC", when(seen));
            }
            if let Some(served) = profile.counts.requests_served {
                let plus = if profile.counts.requests_served_exact == Some(false) {
                    "+"
                } else {
                    ""
                };
                println!("served          {served}{plus} requests");
            }
            for model in &profile.models {
                println!(
                    "model           {} ({})",
                    printable(&model.id),
                    printable(model.service.as_deref().unwrap_or("-"))
                );
            }
            Ok(())
        }
        ProvidersCommand::Served { provider, list } => {
            let (operator, name) = split_provider(&provider)?;
            let records = take_records(
                client.provider_requests(operator, name, filter(&list)?),
                list.limit,
            )
            .await?;
            print_records(ui, &records, "Your nodes have served no requests yet.")
        }
        ProvidersCommand::Set {
            provider,
            accepting,
        } => {
            let (operator, name) = split_provider(&provider)?;
            if accepting.is_none() {
                return Err("nothing to change: pass --accepting true|false"
                    .to_owned()
                    .into());
            }
            let settings = ProviderSettings {
                accepting,
                access: None,
            };
            let profile = client.update_provider(operator, name, &settings).await?;
            if ui.json {
                return ui.print_json(&profile).map_err(Failure::from);
            }
            println!(
                "Updated {}/{}.",
                printable(&profile.operator),
                printable(&profile.name)
            );
            Ok(())
        }
    }
}
