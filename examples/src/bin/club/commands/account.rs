use super::*;

pub(super) async fn login(target: &Target, ui: Ui, args: LoginArgs) -> Result<(), String> {
    let dir = target.dir.clone().ok_or(
        "no config directory to save the key in: set CLUB_CONFIG_DIR (or HOME)".to_owned(),
    )?;
    // Sign-in needs no key; none is sent.
    let client = Client::builder(target.url.clone())
        .user_agent(concat!("club/", env!("CARGO_PKG_VERSION")))
        .request_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let explain = |error: Error| -> String {
        match error.code() {
            Some("sign_in_unavailable") => format!(
                "sign-in is not available on {}: {}\nhint: ask its operator for an API key and pass it with --api-key or CLUB_API_KEY",
                target.url,
                error.message()
            ),
            Some("expired_token") => {
                format!("{} — run `club login` again", error.message())
            }
            Some("access_denied") => format!("sign-in was refused: {}", error.message()),
            _ if error.status() == Some(404) => format!(
                "{} does not offer sign-in ({})\nhint: pass a key with --api-key or CLUB_API_KEY",
                target.url,
                error.message()
            ),
            _ => target.explain(&error),
        }
    };
    let authorization = client.start_device_login().await.map_err(explain)?;
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "Open {} and enter the code {}\nWaiting for you to sign in…",
        printable(&authorization.verification_uri),
        printable(&authorization.user_code)
    );
    let key_name = args.key_name.as_deref();
    let mut accept = args.accept_terms;
    let token = loop {
        match client
            .wait_for_device_token(&authorization, accept, key_name)
            .await
        {
            Ok(token) => break token,
            Err(error) if error.code() == Some("terms_required") && !accept => {
                let _ = writeln!(err, "{}", printable(&error.message()));
                if !confirm("Are you 18 or older and do you accept the terms?") {
                    return Err("sign-in cancelled: the terms were not accepted".into());
                }
                accept = true;
            }
            Err(error) => return Err(explain(error)),
        }
    };
    let saved = SavedLogin {
        url: Some(target.url.clone()),
        api_key: Some(token.key.clone()),
        key_id: token.key_id.clone(),
        handle: token.handle.clone(),
    };
    let path = config::save(&dir, &saved)?;
    if ui.json {
        return ui.print_json(&serde_json::json!({
            "handle": token.handle,
            "key_id": token.key_id,
            "scopes": token.scopes,
            "url": target.url,
            "config": path,
        }));
    }
    println!(
        "Signed in{} to {}. The key is saved in {}.",
        token
            .handle
            .as_deref()
            .map(|h| format!(" as {}", printable(h)))
            .unwrap_or_default(),
        target.url,
        path.display()
    );
    Ok(())
}

pub(super) fn logout(target: &Target) -> Result<(), String> {
    let Some(dir) = &target.dir else {
        println!("Not signed in.");
        return Ok(());
    };
    let saved = config::load(dir).unwrap_or_default();
    if config::forget(dir)? {
        println!(
            "Forgot the saved key{}.",
            saved
                .url
                .as_deref()
                .map(|u| format!(" for {u}"))
                .unwrap_or_default()
        );
        if let Some(id) = saved.key_id {
            println!("It stays valid on the coordinator until revoked: club keys revoke {id}");
        }
    } else {
        println!("Not signed in.");
    }
    Ok(())
}

pub(super) async fn account(target: &Target, ui: Ui, command: AccountCommand) -> Outcome {
    let client = target.client()?;
    match command {
        AccountCommand::Show => {
            let me = client.account().await?;
            if ui.json {
                return ui.print_json(&me).map_err(Failure::from);
            }
            println!("handle              {}", printable(&me.handle));
            if let Some(email) = &me.email {
                println!("email               {}", printable(email));
            }
            println!("member since        {} UTC", when(&me.created_at));
            println!("default visibility  {}", me.default_visibility.as_str());
            if let Some(routing) = me.routing_preference {
                println!("routing preference  {}", routing.as_str());
            }
            if let Some(at) = &me.terms_accepted_at {
                println!("terms accepted      {} UTC", when(at));
            }
            Ok(())
        }
        AccountCommand::Set {
            default_visibility,
            routing_preference,
        } => {
            let settings = AccountSettings {
                default_visibility: default_visibility
                    .as_deref()
                    .map(parse_visibility)
                    .transpose()?,
                routing_preference: routing_preference
                    .as_deref()
                    .map(str::parse::<RoutingPreference>)
                    .transpose()?,
            };
            if settings == AccountSettings::default() {
                return Err(
                    "nothing to change: pass --default-visibility and/or --routing-preference"
                        .to_owned()
                        .into(),
                );
            }
            let me = client.update_account(&settings).await?;
            if ui.json {
                return ui.print_json(&me).map_err(Failure::from);
            }
            println!(
                "Saved. Your requests are now {} unless a request says otherwise.",
                me.default_visibility.as_str()
            );
            Ok(())
        }
        AccountCommand::Delete { yes } => {
            let me = client.account().await?;
            if !yes {
                eprintln!(
                    "This deletes your account {}, its keys, every request you made (any visibility) and your providers. It cannot be undone.",
                    printable(&me.handle)
                );
                let typed = answer(&format!(
                    "Type your handle ({}) to confirm: ",
                    printable(&me.handle)
                ));
                if typed.as_deref() != Some(me.handle.as_str()) {
                    return Err("not confirmed; nothing was deleted".to_owned().into());
                }
            }
            let deleted = client.delete_account().await?;
            if target.saved_key
                && let Some(dir) = &target.dir
            {
                let _ = config::forget(dir);
            }
            if ui.json {
                return ui.print_json(&deleted).map_err(Failure::from);
            }
            println!("Deleted the account {}.", printable(&deleted.handle));
            for removed in &deleted.removed {
                println!("  removed: {}", printable(removed));
            }
            if let Some(not_reached) = &deleted.not_reached {
                println!("Not reached: {}", printable(not_reached));
            }
            Ok(())
        }
    }
}
