"""neuroauthd: the service between an EEG headset and MQTT."""
