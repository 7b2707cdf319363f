# RT initialdata for the live adapter tests: the steps RT 5.0's REST2 cannot do.
#
# Run by .ci/rt-setup.sh as `rt-setup-database --action insert --datafile THIS`,
# after the queues, custom fields and users exist (created through REST2).
# REST2 in RT 5.0 has no endpoint to apply a custom field to a queue, to grant
# rights, or to create an auth token, so this file does those three things.
# Every step loads before it creates, so running it again changes nothing.
#
# Input comes from the environment (set by rt-setup.sh):
#   RT_CI_QUEUES          comma-separated queue names
#   RT_CI_CUSTOM_FIELDS   comma-separated ticket custom field names to apply to them
#   RT_CI_TRIAGE_USER     the service's API user
#   RT_CI_AGENTS          comma-separated agents who may own tickets in the queues
#   RT_CI_READONLY_USER   a user who may see tickets but change nothing
#   RT_CI_TOKEN_FILE      when set, a new auth token for the triage user is written here

use strict;
use warnings;

my @queue_names = split /\s*,\s*/, ( $ENV{RT_CI_QUEUES} // '' );
my @cf_names    = split /\s*,\s*/, ( $ENV{RT_CI_CUSTOM_FIELDS} // '' );
my @agents      = split /\s*,\s*/, ( $ENV{RT_CI_AGENTS} // '' );
my $triage_user   = $ENV{RT_CI_TRIAGE_USER}   // '';
my $readonly_user = $ENV{RT_CI_READONLY_USER} // '';
my $token_file    = $ENV{RT_CI_TOKEN_FILE}    // '';

# The rights the adapter documents in docs/rt.md, nothing more.
# CreateTicket: RT asks for it on the queue a ticket moves to. ReassignTicket: to
# give a ticket that someone owns another owner.
my @triage_queue_rights = qw(
    SeeQueue ShowTicket ShowTicketComments ModifyTicket CommentOnTicket
    ReassignTicket CreateTicket
);
my @triage_cf_rights    = qw(SeeCustomField ModifyCustomField);
my @agent_queue_rights  = qw(SeeQueue ShowTicket OwnTicket);
my @readonly_queue_rights = qw(SeeQueue ShowTicket ShowTicketComments);
my @readonly_cf_rights    = qw(SeeCustomField);
# As on a real helpdesk, anyone may open a ticket by e-mail (the tests send mail
# through RT's mail gateway to get real multipart messages).
my @everyone_queue_rights = qw(CreateTicket ReplyToTicket);

sub fail { die "provision: @_\n" }

sub load_user {
    my $name = shift;
    my $user = RT::User->new( RT->SystemUser );
    $user->Load($name);
    fail("user '$name' does not exist (create it through REST2 first)") unless $user->id;
    return $user;
}

sub grant {
    my ( $principal_owner, $object, @rights ) = @_;
    my $principal = $principal_owner->PrincipalObj;
    my $name = $principal_owner->Name;
    for my $right (@rights) {
        next if $principal->HasRight( Right => $right, Object => $object );
        my ( $ok, $msg ) = $principal->GrantRight( Right => $right, Object => $object );
        fail("granting $right to $name: $msg") unless $ok;
        print "granted $right to $name on " . ref($object) . " " . $object->id . "\n";
    }
}

our @Final = (
    sub {
        my @queues;
        for my $name (@queue_names) {
            my $queue = RT::Queue->new( RT->SystemUser );
            $queue->Load($name);
            fail("queue '$name' does not exist (create it through REST2 first)") unless $queue->id;
            push @queues, $queue;
        }

        my @cfs;
        for my $name (@cf_names) {
            my $cf = RT::CustomField->new( RT->SystemUser );
            $cf->LoadByName( Name => $name, LookupType => RT::Ticket->CustomFieldLookupType );
            fail("custom field '$name' does not exist (create it through REST2 first)") unless $cf->id;
            for my $queue (@queues) {
                next if $cf->IsGlobal || $cf->IsAdded( $queue->id );
                my ( $ok, $msg ) = $cf->AddToObject($queue);
                fail("applying '$name' to '" . $queue->Name . "': $msg") unless $ok;
                print "applied custom field $name to queue " . $queue->Name . "\n";
            }
            push @cfs, $cf;
        }

        my $everyone = RT::Group->new( RT->SystemUser );
        $everyone->LoadSystemInternalGroup('Everyone');
        fail("the Everyone group is missing") unless $everyone->id;
        grant( $everyone, $_, @everyone_queue_rights ) for @queues;

        if ($triage_user) {
            my $user = load_user($triage_user);
            grant( $user, $_, @triage_queue_rights ) for @queues;
            grant( $user, $_, @triage_cf_rights )    for @cfs;
        }
        for my $name (@agents) {
            my $user = load_user($name);
            grant( $user, $_, @agent_queue_rights ) for @queues;
        }
        if ($readonly_user) {
            my $user = load_user($readonly_user);
            grant( $user, $_, @readonly_queue_rights ) for @queues;
            grant( $user, $_, @readonly_cf_rights )    for @cfs;
        }

        if ( $token_file && $triage_user ) {
            my $user = load_user($triage_user);
            my $description = 'helpdesk-triage CI';
            # Tokens are stored hashed: one that was lost cannot be read back, so
            # the old ones are dropped and a new one is made.
            my $tokens = RT::AuthTokens->new( RT->SystemUser );
            $tokens->LimitOwner( VALUE => $user->id );
            while ( my $old = $tokens->Next ) {
                $old->Delete if $old->Description eq $description;
            }
            my $token = RT::AuthToken->new( RT->SystemUser );
            my ( $id, $msg, $authstring ) = $token->Create(
                Owner       => $user->id,
                Description => $description,
            );
            fail("creating the auth token: $msg") unless $id;
            my $old_umask = umask 077;
            open my $fh, '>', $token_file or fail("cannot write $token_file: $!");
            print {$fh} "$authstring\n";
            close $fh or fail("cannot write $token_file: $!");
            umask $old_umask;
            print "created an auth token for $triage_user\n";
        }
    },
);

1;
