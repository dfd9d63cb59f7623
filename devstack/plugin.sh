#!/bin/bash
# DevStack plugin for trusted-launch: installs the package (and swtpm where no
# hardware TPM exists), runs the TTP over HTTPS, enrolls this compute host,
# configures nova-scheduler's filter and nova-compute's driver, and creates one
# host aggregate per security profile.

TL_TTP_CONF=$TRUSTED_LAUNCH_CONF_DIR/ttp.conf
TL_TTP_URL=https://$SERVICE_HOST:$TRUSTED_LAUNCH_TTP_PORT
TL_TTP_RPC_CONF=$TRUSTED_LAUNCH_CONF_DIR/ttp-rpc.conf
TL_RECEIPT_KEY=$TRUSTED_LAUNCH_CONF_DIR/ttp-receipt-key.pem

function install_trusted_launch {
    install_package swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config genisoimage
    setup_develop "$TRUSTED_LAUNCH_DIR"
    # nova-compute's loader imports nova.virt.<compute_driver>: put the shim there.
    local nova_virt
    nova_virt=$(python3 -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
    sudo ln -sfn "$TRUSTED_LAUNCH_DIR/nova/virt/trusted_launch" "$nova_virt/trusted_launch"
}

function _trusted_launch_tcti {
    if [[ -n "$TRUSTED_LAUNCH_TCTI" ]]; then
        echo "$TRUSTED_LAUNCH_TCTI"
    elif [[ -e /dev/tpmrm0 ]]; then
        echo "device:/dev/tpmrm0"
    else
        echo "swtpm:host=127.0.0.1,port=$TRUSTED_LAUNCH_SWTPM_PORT"
    fi
}

function start_trusted_launch_swtpm {
    [[ "$(_trusted_launch_tcti)" == swtpm:* ]] || return 0
    local state=$TRUSTED_LAUNCH_DATA_DIR/swtpm
    sudo install -d -o "$STACK_USER" "$state"
    [[ -e $state/tpm2-00.permall ]] || swtpm_setup --tpm2 --tpmstate "$state" \
        --create-ek-cert --create-platform-cert --lock-nvram --pcr-banks sha1,sha256
    run_process tl-swtpm "$(which swtpm) socket --tpm2 --tpmstate dir=$state \
        --server type=tcp,port=$TRUSTED_LAUNCH_SWTPM_PORT,bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((TRUSTED_LAUNCH_SWTPM_PORT + 1)),bindaddr=127.0.0.1 \
        --flags not-need-init,startup-clear"
    sleep 1
    # A swtpm has measured nothing: replay the configured firmware log into it,
    # so its PCRs and the log the TTP judges agree (a development stand-in).
    python3 -c "import pathlib, sys; from trusted_launch.sandbox.swtpm import boot; \
boot(int(sys.argv[1]), pathlib.Path(sys.argv[2]))" \
        "$TRUSTED_LAUNCH_SWTPM_PORT" "$TRUSTED_LAUNCH_EVENT_LOG"
}

function configure_trusted_launch_ttp {
    sudo install -d -o "$STACK_USER" "$TRUSTED_LAUNCH_CONF_DIR" "$TRUSTED_LAUNCH_DATA_DIR"
    local cert=$TRUSTED_LAUNCH_CONF_DIR/ttp-cert.pem key=$TRUSTED_LAUNCH_CONF_DIR/ttp-key.pem
    [[ -e $cert ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 365 -subj "/CN=$SERVICE_HOST" -addext "subjectAltName=IP:$SERVICE_HOST" \
        -keyout "$key" -out "$cert"
    # The same code writes ttp.conf here and in tools/run-cloud.sh.
    trusted-launch configure ttp --config-file "$TL_TTP_CONF" \
        --bind-host "$SERVICE_HOST" --bind-port "$TRUSTED_LAUNCH_TTP_PORT" \
        --cert-file "$cert" --key-file "$key" \
        --database-url "sqlite:///$TRUSTED_LAUNCH_DATA_DIR/ttp.sqlite" \
        --data-dir "$TRUSTED_LAUNCH_DATA_DIR" \
        --ek-ca-files "/var/lib/swtpm-localca/issuercert.pem,/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem" \
        --profile-dir "$TRUSTED_LAUNCH_DIR/examples/profiles" \
        --rpc-ttp-url "$TL_TTP_URL" --rpc-topic "$TRUSTED_LAUNCH_TTP_RPC_TOPIC"
    # trusted-launch-ttp-rpc's bus (a secret): its own file, never a command line.
    (umask 077; printf '[DEFAULT]\ntransport_url = %s\n' "$(get_transport_url)" \
        > "$TL_TTP_RPC_CONF")
    trusted-launch-ttp-manage --config-file "$TL_TTP_CONF" db sync
}

function configure_trusted_launch_nova {
    # The same code edits nova.conf here and in tools/run-cloud.sh.
    local shared=(--profiles "$TRUSTED_LAUNCH_PROFILES" --ttp-url "$TL_TTP_URL"
                  --ttp-ca-file "$TRUSTED_LAUNCH_CONF_DIR/ttp-cert.pem")
    trusted-launch configure nova-scheduler --config-file "$NOVA_CONF" "${shared[@]}"
    trusted-launch configure nova-compute --config-file "$NOVA_CPU_CONF" "${shared[@]}" \
        --tcti "$(_trusted_launch_tcti)" --event-log "$TRUSTED_LAUNCH_EVENT_LOG" \
        --host-profile "$TRUSTED_LAUNCH_HOST_PROFILE" \
        --ak-certificate-file "$TRUSTED_LAUNCH_CONF_DIR/ak-cert.pem" \
        --ttp-auth-token-file "$TRUSTED_LAUNCH_CONF_DIR/ttp-host-token" \
        --ttp-transport "$TRUSTED_LAUNCH_TTP_TRANSPORT" \
        --ttp-rpc-topic "$TRUSTED_LAUNCH_TTP_RPC_TOPIC" --ttp-receipt-key-file "$TL_RECEIPT_KEY"
}

function enroll_trusted_launch_host {
    # The operator's consent: register this host with its TPM's EK, then give
    # nova-compute a host token for periodic attestation.
    local ek
    ek=$(trusted-launch host ek-fingerprint --tcti "$(_trusted_launch_tcti)")
    trusted-launch-ttp-manage --config-file "$TL_TTP_CONF" host add "$(hostname)" \
        --ek-fingerprint "$ek" || true
    (umask 077; trusted-launch-ttp-manage --config-file "$TL_TTP_CONF" token create \
        --role host --host "$(hostname)" > "$TRUSTED_LAUNCH_CONF_DIR/ttp-host-token")
    trusted-launch host enroll --ttp "$TL_TTP_URL" --host "$(hostname)" \
        --tcti "$(_trusted_launch_tcti)" --ttp-ca-file "$TRUSTED_LAUNCH_CONF_DIR/ttp-cert.pem" \
        --ttp-token-file "$TRUSTED_LAUNCH_CONF_DIR/ttp-host-token" \
        --ak-cert-out "$TRUSTED_LAUNCH_CONF_DIR/ak-cert.pem"
    # The TTP's receipt key (public): nova-compute checks releases against it and puts it
    # on each trusted guest's config drive, where the guest agent checks its receipt.
    trusted-launch configure ttp-receipt-key --ttp-url "$TL_TTP_URL" \
        --ttp-ca-file "$TRUSTED_LAUNCH_CONF_DIR/ttp-cert.pem" --out "$TL_RECEIPT_KEY"
}

function create_trusted_launch_aggregates {
    local profile
    for profile in ${TRUSTED_LAUNCH_PROFILES//,/ }; do
        openstack aggregate show "sp-$profile" >/dev/null 2>&1 || \
            openstack aggregate create --property "trusted_sp=$profile" "sp-$profile"
    done
    openstack aggregate add host "sp-$TRUSTED_LAUNCH_HOST_PROFILE" "$(hostname)" || true
}

if [[ "$1" == "stack" && "$2" == "install" ]]; then
    install_trusted_launch
elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    configure_trusted_launch_ttp
    configure_trusted_launch_nova
elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    start_trusted_launch_swtpm
    run_process tl-ttp "$(which trusted-launch-ttp) --config-file $TL_TTP_CONF"
    if [[ "$TRUSTED_LAUNCH_TTP_TRANSPORT" == rpc ]]; then
        run_process tl-ttp-rpc "$(which trusted-launch-ttp-rpc) --config-file $TL_TTP_CONF \
--config-file $TL_TTP_RPC_CONF"
    fi
    enroll_trusted_launch_host
    create_trusted_launch_aggregates
fi

if [[ "$1" == "unstack" ]]; then
    stop_process tl-ttp-rpc
    stop_process tl-ttp
    stop_process tl-swtpm
fi
