#!/bin/bash
# DevStack plugin for trusted-launch: installs the package, runs the TTP,
# and configures nova-scheduler and nova-compute in nova.conf.

function install_trusted_launch {
    install_package swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config
    setup_develop "$TRUSTED_LAUNCH_DIR"
}

function configure_trusted_launch_ttp {
    sudo install -d -o "$STACK_USER" "$TRUSTED_LAUNCH_TTP_CONF_DIR" "$TRUSTED_LAUNCH_TTP_DATA_DIR"
    local conf=$TRUSTED_LAUNCH_TTP_CONF_DIR/ttp.conf
    iniset "$conf" api bind_port "$TRUSTED_LAUNCH_TTP_PORT"
    iniset "$conf" database connection "sqlite:///$TRUSTED_LAUNCH_TTP_DATA_DIR/ttp.sqlite"
    iniset "$conf" keys key_dir "$TRUSTED_LAUNCH_TTP_DATA_DIR/keys"
    trusted-launch-ttp-manage --config-file "$conf" db sync
}

function configure_trusted_launch_nova {
    local filters
    filters=$(iniget "$NOVA_CONF" filter_scheduler enabled_filters)
    iniset "$NOVA_CONF" filter_scheduler enabled_filters "${filters:+$filters,}SecurityProfileFilter"
    iniadd "$NOVA_CONF" filter_scheduler available_filters \
        trusted_launch.scheduler.security_profile_filter.SecurityProfileFilter
    iniset "$NOVA_CONF" trusted_launch tcti "$TRUSTED_LAUNCH_TCTI"
    iniset "$NOVA_CONF" trusted_launch security_profiles "$TRUSTED_LAUNCH_PROFILES"
    iniset "$NOVA_CONF" trusted_launch allowed_ttp_urls "https://$SERVICE_HOST:$TRUSTED_LAUNCH_TTP_PORT"
}

function start_trusted_launch_ttp {
    run_process tl-ttp "$(which trusted-launch-ttp) --config-file $TRUSTED_LAUNCH_TTP_CONF_DIR/ttp.conf"
}

if [[ "$1" == "stack" && "$2" == "install" ]]; then
    install_trusted_launch
elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    configure_trusted_launch_ttp
    configure_trusted_launch_nova
elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    start_trusted_launch_ttp
fi

if [[ "$1" == "unstack" ]]; then
    stop_process tl-ttp
fi
